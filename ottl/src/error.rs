use std::fmt;

/// Where in a condition's text something is (1-based, columns counted in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub(crate) const START: Pos = Pos { line: 1, column: 1 };
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A condition that cannot be loaded: a syntax error, or a name (path, function, enum) or
/// argument that does not resolve. Always carries the position it refers to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at {pos}: {message}")]
pub struct OttlError {
    pub kind: ErrorKind,
    pub pos: Pos,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text does not follow the grammar.
    Syntax,
    /// The text parses but does not compile (unknown path/function/enum, bad arguments).
    Compile,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Syntax => "syntax error",
            ErrorKind::Compile => "invalid condition",
        })
    }
}

impl OttlError {
    pub(crate) fn syntax(pos: Pos, message: impl Into<String>) -> OttlError {
        OttlError {
            kind: ErrorKind::Syntax,
            pos,
            message: message.into(),
        }
    }

    pub(crate) fn compile(pos: Pos, message: impl Into<String>) -> OttlError {
        OttlError {
            kind: ErrorKind::Compile,
            pos,
            message: message.into(),
        }
    }
}

/// A condition failed on one item (type mismatch in math, bad converter input, ...). The
/// filter processor keeps such items; under `error_mode: propagate` it refuses the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

impl EvalError {
    pub(crate) fn new(msg: impl Into<String>) -> EvalError {
        EvalError(msg.into())
    }
}
