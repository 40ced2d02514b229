//! CloudWatch metrics the template's alarms watch.

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::types::{MetricDatum, StandardUnit};

pub const NAMESPACE: &str = "mailroom";
/// Published (without dimensions, as the alarm expects) when a new config fails validation.
pub const CONFIG_REJECTED: &str = "ConfigRejected";

#[derive(Clone)]
pub struct Metrics {
    pub client: Client,
}

impl Metrics {
    /// Counts one event. A failure to publish is logged, never raised: metrics must not
    /// stop mail.
    pub async fn count(&self, name: &str) {
        let datum = MetricDatum::builder()
            .metric_name(name)
            .value(1.0)
            .unit(StandardUnit::Count)
            .build();
        if let Err(e) = self
            .client
            .put_metric_data()
            .namespace(NAMESPACE)
            .metric_data(datum)
            .send()
            .await
        {
            tracing::warn!(metric = name, error = %aws_sdk_cloudwatch::error::DisplayErrorContext(&e), "could not publish metric");
        }
    }
}
