//! Profiles and ingestion (issue 3, in progress): the Segment tracking API's parser and
//! ingestion with identity resolution; imports, aggregates and look-up build on it.
pub mod demo;
pub mod import;
pub mod ingest;
pub mod lookup;
pub mod reclassify;
pub mod segment;
