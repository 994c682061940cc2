//! Profiles and ingestion (issue 3, in progress): the Segment tracking-spec parser is
//! here; storage, identity resolution and aggregates build on it.
pub mod segment;
