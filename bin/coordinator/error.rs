//! The application's error: what went wrong, and the exit code it maps to.

use std::io;

/// Most bytes of a user's input that a message quotes.
pub const QUOTE_LIMIT: usize = 200;

/// `s` as every message quotes a user's input: in double quotes with escapes, cut to about
/// [`QUOTE_LIMIT`] bytes (on a character boundary) and then followed by its full length,
/// `"0.1,0.2,0.3"` or `"0.1,0.2,..."... (123456 bytes)`, so that a long argument or line
/// never floods the terminal.
pub fn quote(s: &str) -> String {
    if s.len() <= QUOTE_LIMIT {
        return format!("{s:?}");
    }
    format!("{:?}... ({} bytes)", cut(s), s.len())
}

/// The first [`QUOTE_LIMIT`] bytes of `s` or fewer, ending on a character boundary.
pub fn cut(s: &str) -> &str {
    let mut end = QUOTE_LIMIT.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A message from elsewhere (clap's) with every single-quoted value longer than
/// [`QUOTE_LIMIT`] bytes cut the same way [`quote`] cuts: `'xxx...' (5000 bytes)`; a line
/// still far longer (a value with quotes inside) is cut too.
pub fn shorten_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(4096));
    for line in message.split_inclusive('\n') {
        let mut short = String::new();
        let mut rest = line;
        while let Some(open) = rest.find('\'') {
            let Some(len) = rest[open + 1..].find('\'') else {
                break;
            };
            let value = &rest[open + 1..open + 1 + len];
            short.push_str(&rest[..=open]);
            if value.len() > QUOTE_LIMIT {
                short.push_str(&format!("{}...' ({} bytes)", cut(value), value.len()));
            } else {
                short.push_str(value);
                short.push('\'');
            }
            rest = &rest[open + len + 2..];
        }
        short.push_str(rest);
        if short.len() > 4 * QUOTE_LIMIT {
            let newline = if short.ends_with('\n') { "\n" } else { "" };
            short = format!("{}... ({} bytes){newline}", cut(&short), short.len());
        }
        out.push_str(&short);
    }
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_short_and_whole_characters() {
        assert_eq!(quote("0.5,x"), "\"0.5,x\"");
        let long = "x".repeat(5000);
        let q = quote(&long);
        assert_eq!(q, format!("\"{}\"... (5000 bytes)", "x".repeat(200)));
        let wide = "é".repeat(300);
        let q = quote(&wide);
        assert!(q.ends_with("\"... (600 bytes)") && q.len() < 220, "{q}");
    }

    #[test]
    fn long_quoted_values_in_other_messages_are_cut() {
        let long = "y".repeat(1000);
        let msg = format!("error: invalid value '{long}' for '--workers <N>': bad\n\nUsage: x\n");
        let short = shorten_quoted(&msg);
        assert_eq!(
            short,
            format!(
                "error: invalid value '{}...' (1000 bytes) for '--workers <N>': bad\n\nUsage: x\n",
                "y".repeat(200)
            )
        );
        assert_eq!(shorten_quoted("a 'b' c\n"), "a 'b' c\n");
        // An unmatched quote, or quotes inside the value: the line is cut as a whole.
        let odd = format!("error: '{long}'{long}' x\n");
        let short = shorten_quoted(&odd);
        assert!(
            short.len() < 4 * QUOTE_LIMIT && short.ends_with("bytes)\n"),
            "{short}"
        );
    }
}
