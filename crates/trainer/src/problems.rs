//! What a configuration check reports: one [`ConfigProblem`] per bad key, all of them together
//! as [`ConfigErrors`], and the [`Validate`] trait every config section implements.
//!
//! A leaf module: the policy modules (early stopping, spike guard, averaging, OOM) validate
//! their sections with these types without importing the config root that embeds them.

use std::fmt;

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path (`training.max_steps`), or empty for the whole file.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
    /// Where the offending value came from (file, environment variable, flag), if known.
    pub origin: Option<String>,
}

impl ConfigProblem {
    /// A problem with `key`, of no known origin (the config loader fills that in where it can).
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into(), origin: None }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.key.is_empty(), &self.origin) {
            (true, Some(o)) => write!(f, "{o}: {}", self.message),
            (true, None) => write!(f, "{}", self.message),
            (false, Some(o)) => write!(f, "{} (from {o}): {}", self.key, self.message),
            (false, None) => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Every problem found in a configuration, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "invalid configuration ({n} problem{}):", if n == 1 { "" } else { "s" })?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Checks a config beyond its types: relations between keys and value ranges.
pub trait Validate {
    /// Pushes every problem found; pushes nothing for a valid config.
    fn validate(&self, problems: &mut Vec<ConfigProblem>);
}
