//! Quarantine digests: who gets a mail listing the quarantined messages of a period, with
//! signed links to release them, and how long those links work.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::HumanDuration;
use crate::matcher::domain_matches;

const DAY: u64 = 86_400;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    /// Gets every entry, whoever the message was for.
    #[serde(default)]
    pub admin: Option<Spanned<String>>,
    /// Each recipient in `[mailroom] domains` gets the entries of the mail sent to them,
    /// unless their domain is listed in `domains`.
    #[serde(default = "super::yes")]
    pub per_recipient: bool,
    /// A domain's entries go to one address instead (a team's postmaster).
    #[serde(default)]
    pub domains: BTreeMap<String, Spanned<String>>,
    /// The quarantined mail of this period before each run is listed.
    #[serde(default = "day")]
    pub period: HumanDuration,
    /// How long a link in a digest works.
    #[serde(default = "fortnight")]
    pub link_expiry: HumanDuration,
    /// Link requests one source IP may make per hour; more are refused.
    #[serde(default = "per_hour")]
    pub link_requests_per_hour: u32,
}

fn day() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(DAY))
}
fn fortnight() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(14 * DAY))
}
fn per_hour() -> u32 {
    30
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            admin: None,
            per_recipient: true,
            domains: BTreeMap::new(),
            period: day(),
            link_expiry: fortnight(),
            link_requests_per_hour: per_hour(),
        }
    }
}

impl DigestConfig {
    /// The first address that is not one, with its span.
    pub fn problem(&self) -> Option<(std::ops::Range<usize>, String)> {
        let bad = |a: &Spanned<String>, what: &str| {
            crate::route::headers::clean_address(a.get_ref())
                .is_none()
                .then(|| {
                    (
                        a.span(),
                        format!("{what} {:?} is not an e-mail address", a.get_ref()),
                    )
                })
        };
        if let Some(p) = self.admin.as_ref().and_then(|a| bad(a, "digest.admin")) {
            return Some(p);
        }
        if self.period.0.as_secs() < 3600 {
            return Some((0..0, "digest.period must be at least 1h".into()));
        }
        if self.link_requests_per_hour == 0 {
            return Some((
                0..0,
                "digest.link_requests_per_hour must be at least 1".into(),
            ));
        }
        self.domains
            .iter()
            .find_map(|(d, a)| bad(a, &format!("digest.domains.{d:?}")))
    }

    /// Where the entries of mail to `recipient` go, once each. Domains match as routing
    /// matches them, subdomains included; of several `domains` entries that match, the
    /// longest (the most specific) wins.
    pub fn destinations(&self, recipient: &str, our_domains: &[String]) -> Vec<String> {
        let recipient = recipient.trim().to_ascii_lowercase();
        let domain = recipient.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let mut out: Vec<String> = Vec::new();
        let mut add = |a: &str| {
            let a = a.trim().to_ascii_lowercase();
            if !a.is_empty() && !out.contains(&a) {
                out.push(a);
            }
        };
        match self
            .domains
            .iter()
            .filter(|(d, _)| domain_matches(d, domain))
            .max_by_key(|(d, _)| d.trim_start_matches(['@', '.']).len())
        {
            Some((_, to)) => add(to.get_ref()),
            None if self.per_recipient && our_domains.iter().any(|d| domain_matches(d, domain)) => {
                add(&recipient)
            }
            None => {}
        }
        if let Some(admin) = &self.admin {
            add(admin.get_ref());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_match_domains_as_routing_does() {
        let mut config = DigestConfig::default();
        config.domains.insert(
            "eu.example.com".into(),
            Spanned::new(0..0, "postmaster-eu@example.com".into()),
        );
        config.domains.insert(
            "example.org".into(),
            Spanned::new(0..0, "postmaster@example.org".into()),
        );
        let ours = ["example.com".to_string(), "example.org".to_string()];
        // A subdomain of one of ours is ours, as for routing.
        assert_eq!(
            config.destinations("Ann@Support.Example.com", &ours),
            ["ann@support.example.com"]
        );
        // The most specific domains entry wins, for its subdomains too.
        assert_eq!(
            config.destinations("bob@sales.eu.example.com", &ours),
            ["postmaster-eu@example.com"]
        );
        assert_eq!(
            config.destinations("eve@lists.example.org", &ours),
            ["postmaster@example.org"]
        );
        // Not ours, no entry: nobody but the admin.
        assert!(
            config
                .destinations("x@example.com.evil.test", &ours)
                .is_empty()
        );
        config.admin = Some(Spanned::new(0..0, "admin@example.com".into()));
        assert_eq!(
            config.destinations("x@other.test", &ours),
            ["admin@example.com"]
        );
    }
}
