//! HOSER's road-network side: LibCity data readers and checks, zone partition and transition
//! matrix, per-step and static features, batching with candidate padding, an OSM importer and
//! a trip simulator. The burn model and trainer build on these.

pub mod baseline;
pub mod data;
pub mod lmtad;
pub mod model;
pub mod osm;
pub mod simulate;
