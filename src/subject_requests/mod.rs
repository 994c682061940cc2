//! Data-subject rights. Restriction of processing (Art. 18) is here; the request state
//! machine, access, erasure and the rest build on it.
pub mod restriction;
