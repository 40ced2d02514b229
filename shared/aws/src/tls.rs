//! Which root certificates the AWS clients trust.
//!
//! The SDK's default client reads and parses the operating system's store (about 140
//! certificates) when it builds its first connection, and on a cold start that is the
//! first call. AWS service endpoints are certified by Amazon Trust Services, whose roots are
//! embedded here (Amazon Root CA 1 to 4, and Starfield Services Root G2 that cross-signs
//! them), so the functions trust those five and read nothing from disk.
//!
//! Behind a TLS-inspecting proxy, or for an endpoint with another CA (an emulator over
//! TLS, a partition outside ATS), set `MAILROOM_TLS_ROOTS=native` to trust the system store
//! instead. The CLI, which runs on operators' machines, trusts the system store unless told
//! `MAILROOM_TLS_ROOTS=amazon`.

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// The environment variable that picks the trust roots.
pub const ROOTS_VAR: &str = "MAILROOM_TLS_ROOTS";

/// Amazon Trust Services' roots, PEM.
const AMAZON_ROOTS: [&str; 5] = [
    include_str!("../roots/amazon-root-ca-1.pem"),
    include_str!("../roots/amazon-root-ca-2.pem"),
    include_str!("../roots/amazon-root-ca-3.pem"),
    include_str!("../roots/amazon-root-ca-4.pem"),
    include_str!("../roots/starfield-services-root-g2.pem"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// The five embedded Amazon Trust Services roots.
    Amazon,
    /// The operating system's store.
    Native,
}

impl Roots {
    /// `MAILROOM_TLS_ROOTS` (`amazon` or `native`), else `default`.
    pub fn from_env(default: Roots) -> Result<Roots, String> {
        match std::env::var(ROOTS_VAR) {
            Err(_) => Ok(default),
            Ok(v) => Roots::parse(&v),
        }
    }

    fn parse(value: &str) -> Result<Roots, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "amazon" => Ok(Roots::Amazon),
            "native" => Ok(Roots::Native),
            _ => Err(format!(
                "{ROOTS_VAR}={value:?}: expected `amazon` (the embedded Amazon Trust Services \
                 roots) or `native` (the system's store)"
            )),
        }
    }

    fn trust_store(self) -> TrustStore {
        match self {
            Roots::Native => TrustStore::default(),
            Roots::Amazon => AMAZON_ROOTS.iter().fold(
                TrustStore::empty().with_native_roots(false),
                |store, pem| store.with_pem_certificate(pem.as_bytes()),
            ),
        }
    }
}

/// The HTTPS client every AWS client here is built on: the SDK's own hyper client, with
/// rustls on ring rather than aws-lc (the SDK's default, which the workspace leaves out:
/// about 2.3 MiB more in each function), proxies from the environment as the SDK's
/// default reads them, trusting `roots`.
pub fn http_client(roots: Roots) -> SharedHttpClient {
    let context = TlsContext::builder()
        .with_trust_store(roots.trust_store())
        .build()
        .expect("a trust store of PEM certificates is a valid TLS context");
    Builder::new().build_with_connector_fn(move |settings, components| {
        let mut connector = ConnectorBuilder::default()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .tls_context(context.clone());
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_roots_are_certificates() {
        for pem in AMAZON_ROOTS {
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
            assert!(pem.trim_end().ends_with("-----END CERTIFICATE-----"));
        }
    }

    #[test]
    fn the_switch_names_its_values() {
        assert_eq!(Roots::parse("native").unwrap(), Roots::Native);
        assert_eq!(Roots::parse(" Amazon ").unwrap(), Roots::Amazon);
        let e = Roots::parse("all").unwrap_err();
        assert!(
            e.contains("MAILROOM_TLS_ROOTS") && e.contains("`native`"),
            "{e}"
        );
    }
}
