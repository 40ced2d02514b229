//! Maps AWS SDK errors onto the core's split. Only errors that are about the message itself
//! are permanent (it is quarantined). A call that may have taken effect although it failed
//! (a broken connection after the request went out, a timeout, a server error) is
//! `Unknown`; everything else, including throttling, access and configuration errors, is
//! retryable and ends in the dead-letter queue, where an alarm fires and nothing is lost.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use mailroom_core::ports::PortError;

pub(crate) fn port_error<E>(
    what: &str,
    e: &SdkError<E, HttpResponse>,
    permanent_codes: &[&str],
) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = format!("{what}: {}", describe(e));
    match e {
        SdkError::ServiceError(se)
            if se
                .err()
                .code()
                .is_some_and(|c| permanent_codes.contains(&c)) =>
        {
            PortError::Permanent(detail)
        }
        SdkError::ServiceError(se)
            if se.raw().status().is_server_error()
                && !se.err().code().is_some_and(is_throttling) =>
        {
            PortError::Unknown(detail)
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => PortError::Unknown(detail),
        SdkError::DispatchFailure(d) if !d.is_user() => PortError::Unknown(detail),
        _ => PortError::Retryable(detail),
    }
}

/// The throttling codes of the services mailroom calls: the request was refused, nothing
/// happened.
pub(crate) fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "LimitExceededException"
            | "SlowDown"
    )
}

/// The service error code, when the call reached the service.
pub(crate) fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    match e {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

/// One line for an audit record or a log field: the error's chain of causes, plus the
/// request id when the service answered. Not `DisplayErrorContext`, which appends the
/// error's `Debug` form: the raw HTTP response with its headers and body (S3's XML error
/// document, say), about 1.5 KB per error, copied into every audit record that quotes it.
pub(crate) fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    if let SdkError::ServiceError(se) = e
        && let Some(id) = se.err().meta().extra("aws_request_id")
    {
        out.push_str(&format!(" (request id {id})"));
    }
    out
}
