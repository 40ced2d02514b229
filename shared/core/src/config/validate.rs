//! Reading a config, and the checks that need the whole file (template references,
//! unreachable rules, addresses).

use toml::Spanned;

use crate::model::Action;

use super::*;

impl Config {
    /// Parses and validates a config. `origin` names the file in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError {
                origin: origin.into(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        config.validate(text, origin)?;
        Ok(config)
    }

    /// Reads a config file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read config: {e}"),
        })?;
        Config::from_toml(&text, &origin)
    }

    fn validate(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let err = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_col(text, span.start);
            ConfigError {
                origin: origin.into(),
                line,
                column,
                message,
            }
        };

        if let Some((span, message)) = self.retention.problem() {
            return Err(err(span, message));
        }
        if let Some((span, message)) = self.digest.problem() {
            return Err(err(span, message));
        }
        if let Some(message) = self.assist.as_ref().and_then(AssistConfig::problem) {
            let at = text.find("[assist]").unwrap_or(0);
            return Err(err(at..at, message));
        }

        let templates: Vec<&str> = self
            .respond
            .templates
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        for t in &self.respond.templates {
            if templates.iter().filter(|n| **n == t.name).count() > 1 {
                return Err(err(
                    t.subject.span(),
                    format!("template {:?} is defined more than once", t.name),
                ));
            }
            for part in [&t.subject, &t.body] {
                let env = minijinja::Environment::new();
                if let Err(e) = env.template_from_str(part.get_ref()) {
                    return Err(err(
                        part.span(),
                        format!("template {:?} does not compile: {e}", t.name),
                    ));
                }
            }
        }

        for (i, rule) in self.routes.iter().enumerate() {
            let r = rule.get_ref();
            if let Some(t) = &r.reply_template
                && !templates.contains(&t.get_ref().as_str())
            {
                return Err(err(
                    t.span(),
                    format!(
                        "route rule {:?} names template {:?}, which is not defined in [[respond.templates]]",
                        r.name,
                        t.get_ref()
                    ),
                ));
            }
            if r.actions.is_empty() {
                return Err(err(
                    rule.span(),
                    format!("route rule {:?} has no actions", r.name),
                ));
            }
            for a in &r.actions {
                if let Action::Store(prefix) = a
                    && let Some(problem) = storage_prefix_problem(prefix)
                {
                    return Err(err(
                        rule.span(),
                        format!("route rule {:?}: {problem}", r.name),
                    ));
                }
                if let Action::Forward(to) = a {
                    if to.is_empty() {
                        return Err(err(
                            rule.span(),
                            format!(
                                "route rule {:?}: forward needs at least one address",
                                r.name
                            ),
                        ));
                    }
                    if let Some(bad) = to.iter().find(|a| !is_plausible_address(a)) {
                        return Err(err(
                            rule.span(),
                            format!("route rule {:?}: {bad:?} is not an e-mail address", r.name),
                        ));
                    }
                }
            }
            // A catch-all that stops makes every later rule it covers unreachable.
            if r.when.is_catch_all() && !r.continue_ {
                let covered = r.when.verdicts();
                if let Some(later) = self.routes[i + 1..].iter().find(|l| {
                    l.get_ref()
                        .when
                        .verdicts()
                        .iter()
                        .all(|v| covered.contains(v))
                }) {
                    return Err(err(
                        later.span(),
                        format!(
                            "route rule {:?} is unreachable: the catch-all rule {:?} before it matches everything and does not `continue`",
                            later.get_ref().name,
                            r.name
                        ),
                    ));
                }
            }
        }

        for rule in &self.classify.rules {
            let r = rule.get_ref();
            if !r.when.category.is_empty() || !r.when.priority.is_empty() {
                return Err(err(
                    rule.span(),
                    format!(
                        "classify rule {:?} cannot test category or priority: they are what classify decides",
                        r.name
                    ),
                ));
            }
        }
        check_unreachable(
            &self.classify.rules,
            |r| (&r.name, &r.when),
            "classify rule",
            text,
            origin,
        )?;
        for rule in &self.classify.priority_rules {
            if !rule.get_ref().when.priority.is_empty() {
                return Err(err(
                    rule.span(),
                    format!(
                        "priority rule {:?} cannot test priority: it decides it",
                        rule.get_ref().name
                    ),
                ));
            }
        }
        check_unreachable(
            &self.classify.priority_rules,
            |r| (&r.name, &r.when),
            "priority rule",
            text,
            origin,
        )?;

        for a in &self.routing.default_actions {
            if let Action::Store(prefix) = a
                && let Some(problem) = storage_prefix_problem(prefix)
            {
                return Err(ConfigError {
                    origin: origin.into(),
                    line: 1,
                    column: 1,
                    message: format!("[routing] default_actions: {problem}"),
                });
            }
        }
        let q = &self.routing.quarantine_prefix;
        if let Some(problem) = storage_prefix_problem(q).or_else(|| {
            (!q.starts_with(QUARANTINE_ROOT))
                .then(|| format!("it must lie below {QUARANTINE_ROOT:?}"))
        }) {
            return Err(ConfigError {
                origin: origin.into(),
                line: 1,
                column: 1,
                message: format!("[routing] quarantine_prefix {q:?}: {problem}"),
            });
        }
        if self.filter.quarantine_score > self.filter.reject_score {
            return Err(ConfigError {
                origin: origin.into(),
                line: 1,
                column: 1,
                message: format!(
                    "[filter] quarantine_score ({}) is above reject_score ({})",
                    self.filter.quarantine_score, self.filter.reject_score
                ),
            });
        }
        if !is_plausible_address(&self.mailroom.from_address) {
            return Err(ConfigError {
                origin: origin.into(),
                line: 1,
                column: 1,
                message: format!(
                    "[mailroom] from_address {:?} is not an e-mail address",
                    self.mailroom.from_address
                ),
            });
        }
        Ok(())
    }

    /// Settings that are valid but loosen a protection, one sentence each; `mailroom check`
    /// prints them as warnings and still passes.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.respond.enabled && !self.respond.require_authenticated_sender {
            out.push(
                "[respond] require_authenticated_sender = false: senders that neither SPF nor \
                 aligned DMARC authenticates get auto-replies too, so a forged Return-Path \
                 gets one (backscatter; the reply carries none of the original's text)"
                    .to_string(),
            );
        }
        out
    }

    /// The default configuration: no rules, every policy at its default.
    pub fn default_config() -> Config {
        Config::from_toml("", "<default>").expect("the default config is valid")
    }
}

fn check_unreachable<R>(
    rules: &[Spanned<R>],
    parts: impl Fn(&R) -> (&String, &Match),
    what: &str,
    text: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    if let Some(pos) = rules.iter().position(|r| {
        parts(r.get_ref()).1.is_catch_all() && parts(r.get_ref()).1.verdict.is_empty()
    }) && let Some(later) = rules.get(pos + 1)
    {
        let (line, column) = line_col(text, later.span().start);
        return Err(ConfigError {
            origin: origin.into(),
            line,
            column,
            message: format!(
                "{what} {:?} is unreachable: {what} {:?} before it has no conditions and matches everything",
                parts(later.get_ref()).0,
                parts(rules[pos].get_ref()).0
            ),
        });
    }
    Ok(())
}

fn is_plausible_address(a: &str) -> bool {
    match a.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !a
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        }
        None => false,
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}
