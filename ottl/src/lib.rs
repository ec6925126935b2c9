//! OTTL conditions (work in progress).
