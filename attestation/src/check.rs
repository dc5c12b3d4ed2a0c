//! One verification check and its outcome.

use serde::Serialize;

/// A named check, whether it passed, and what was found (expected and actual values on failure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable snake_case name, e.g. `report_signature`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was checked, or why it failed.
    pub detail: String,
}

impl Check {
    /// A passed check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { name: name.into(), passed: true, detail: detail.into() }
    }

    /// A failed check.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { name: name.into(), passed: false, detail: detail.into() }
    }
}

/// The outcome of verifying one piece of evidence: every check made, passed or failed, and the
/// claims whenever the evidence parsed far enough to have any (verified or not: a failed
/// verification still shows what the evidence said, for diagnosis).
#[must_use = "a verification says nothing until its outcome is checked"]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification<C> {
    /// Every check that was made.
    pub checks: Vec<Check>,
    /// The evidence's claims, when it parsed.
    pub claims: Option<C>,
}

impl<C> Verification<C> {
    /// True when the evidence parsed, at least one check was made, and every check passed.
    pub fn is_verified(&self) -> bool {
        self.claims.is_some() && !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The failed checks as `name: detail` lines.
    pub fn errors(&self) -> Vec<String> {
        self.checks.iter().filter(|c| !c.passed).map(|c| format!("{}: {}", c.name, c.detail)).collect()
    }

    /// The proof token later code requires, or this verification back when it failed.
    pub fn into_verified(self) -> Result<Verified<C>, Box<Self>> {
        if !self.is_verified() {
            return Err(Box::new(self));
        }
        match self.claims {
            Some(claims) => Ok(Verified { claims }),
            None => Err(Box::new(Self { checks: self.checks, claims: None })),
        }
    }
}

/// Claims of evidence that passed every check. Only [`Verification::into_verified`] makes one, so
/// holding one is proof that verification succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<C> {
    claims: C,
}

impl<C> Verified<C> {
    /// The verified claims.
    pub fn claims(&self) -> &C {
        &self.claims
    }
}
