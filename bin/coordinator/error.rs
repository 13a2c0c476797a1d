//! The application's error: what went wrong, and the exit code it maps to.

use std::io;

/// Bad input is exit code 2; a run that could not complete is exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The user gave something we cannot use (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The run failed or some jobs failed (exit code 1).
    #[error("{0}")]
    Failed(String),
    /// A signal stopped the run (exit code 128 + the signal: 130 for SIGINT, 143 for SIGTERM).
    #[error("{message}")]
    Interrupted {
        /// The signal number.
        signal: i32,
        /// What was finished.
        message: String,
    },
}

impl AppError {
    /// Bad input.
    pub fn usage(msg: impl Into<String>) -> AppError {
        AppError::Usage(msg.into())
    }

    /// A failed run.
    pub fn failed(msg: impl Into<String>) -> AppError {
        AppError::Failed(msg.into())
    }

    /// What kind of error this is, as the JSON error document names it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            AppError::Usage(_) => "usage",
            AppError::Failed(_) => "failed",
            AppError::Interrupted { .. } => "interrupted",
        }
    }

    /// The documented exit code: 2 for bad input, 1 for failures, 128 + signal when
    /// interrupted.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Usage(_) => 2,
            AppError::Failed(_) => 1,
            AppError::Interrupted { signal, .. } => u8::try_from(128 + signal).unwrap_or(1),
        }
    }
}

impl From<procpool::Error> for AppError {
    fn from(e: procpool::Error) -> AppError {
        match e {
            procpool::Error::Config(_) => AppError::Usage(e.to_string()),
            other => AppError::Failed(other.to_string()),
        }
    }
}

/// How a mode can end besides success: an error, or a reader that went away.
#[derive(Debug)]
pub enum Outcome {
    /// Something failed; printed on stderr, mapped to its exit code.
    Error(AppError),
    /// Stdout was closed (`coordinator ... | head -1`): stop quietly, exit code 0.
    BrokenPipe,
}

impl From<AppError> for Outcome {
    fn from(e: AppError) -> Self {
        Outcome::Error(e)
    }
}

impl From<io::Error> for Outcome {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Outcome::BrokenPipe
        } else {
            Outcome::Error(AppError::failed(format!("could not write the output: {e}")))
        }
    }
}

impl From<procpool::Error> for Outcome {
    fn from(e: procpool::Error) -> Self {
        Outcome::Error(e.into())
    }
}
