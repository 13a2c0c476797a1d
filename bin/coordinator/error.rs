//! The application's error: what went wrong, and the exit code it maps to.

/// Bad input is exit code 2; a run that could not complete is exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The user gave something we cannot use (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The run failed or some jobs failed (exit code 1).
    #[error("{0}")]
    Failed(String),
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

    /// The documented exit code: 2 for bad input, 1 for failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Usage(_) => 2,
            AppError::Failed(_) => 1,
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
