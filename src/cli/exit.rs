//! How a command ends: one error type, each kind one exit code, each said
//! on stderr in one way.

use std::{fmt, process::ExitCode};

/// What a command ends with.
pub(crate) type Outcome = Result<(), Failure>;

/// Why a command failed, with the line it prints (without its prefix).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Exit 1: the code asked for is not in the catalog.
    NotFound(String),
    /// Exit 2: bad usage or bad input (a flag, a file, a value).
    BadInput(String),
    /// Exit 3: the server could not be reached, refused, or failed.
    Failed(String),
    /// Exit 1: `errmap check` found a change that breaks clients.
    Breaking(String),
}

impl Failure {
    /// The process's exit code for this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::NotFound(_) | Failure::Breaking(_) => 1,
            Failure::BadInput(_) => 2,
            Failure::Failed(_) => 3,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotFound(text) => write!(f, "not found: {text}"),
            Failure::Breaking(text) => write!(f, "breaking: {text}"),
            Failure::BadInput(text) | Failure::Failed(text) => write!(f, "error: {text}"),
        }
    }
}

/// Says `outcome` on stderr if it failed, and gives its exit code.
pub(crate) fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code_and_prefix() {
        let cases = [
            (Failure::NotFound("48".into()), 1, "not found: 48"),
            (Failure::BadInput("bad".into()), 2, "error: bad"),
            (Failure::Failed("down".into()), 3, "error: down"),
        ];
        for (failure, code, line) in cases {
            assert_eq!(failure.exit_code(), code);
            assert_eq!(failure.to_string(), line);
        }
    }
}
