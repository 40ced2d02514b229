//! One module per filter check.

use super::Check;

/// Every check, in the order they run.
pub fn all() -> Vec<Box<dyn Check>> {
    vec![]
}
