//! Thread pools for blocking engine calls.
