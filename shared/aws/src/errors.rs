//! Maps AWS SDK errors onto the core's retryable / permanent split. Only errors that are
//! about the message itself are permanent (it is quarantined); everything else, including
//! access and configuration errors, is retried and ends in the dead-letter queue, where an
//! alarm fires and nothing is lost.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
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
    let detail = format!("{what}: {}", DisplayErrorContext(e));
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
