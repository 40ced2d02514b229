//! Maps AWS SDK errors onto the core's retryable / permanent split. Only errors that are
//! about the message itself are permanent (it is quarantined); everything else, including
//! access and configuration errors, is retried and ends in the dead-letter queue, where an
//! alarm fires and nothing is lost.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use mailroom_core::ports::PortError;

pub(crate) fn port_error<E, R>(
    what: &str,
    e: &SdkError<E, R>,
    permanent_codes: &[&str],
) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
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
        _ => PortError::Retryable(detail),
    }
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
