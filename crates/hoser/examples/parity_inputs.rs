//! Writes the model inputs of the parity test as JSON: the static graph features and one collated
//! batch (the first four training samples) of a LibCity dataset directory, zones from METIS with 3
//! zones (as the tests use for `tests/fixtures/tiny`).
//!
//! `cargo run -p hoser --example parity_inputs -- <dataset dir> <out.json>`

use std::path::PathBuf;

use hoser::data::{DatasetOptions, HoserData};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, out] = args.as_slice() else {
        return Err("usage: parity_inputs <dataset dir> <out.json>".into());
    };
    let data =
        HoserData::load(&PathBuf::from(dir), &DatasetOptions { num_zones: 3, ..DatasetOptions::default() }, None)?;
    let samples: Vec<_> = data.train.samples.iter().take(4).collect();
    let batch = data.collator(None)?.collate(samples);
    let f = &data.features;
    let value = json!({
        "features": {
            "road_attr_len": f.road_attr_len,
            "road_attr_type": f.road_attr_type,
            "num_road_types": f.num_road_types,
            "road_attr_lon": f.road_attr_lon,
            "road_attr_lat": f.road_attr_lat,
            "road_edge_index": f.road_graph.edge_index(),
            "intersection_attr": f.road_graph.edge_attr(),
            "num_zones": f.num_zones,
            "zone_edge_index": f.zone_graph.edge_index(),
            "zone_edge_weight": f.zone_graph.weight,
            "road_to_zone": f.road_to_zone,
        },
        "batch": {
            "shape": [batch.batch_size, batch.max_trace_len, batch.max_candidates],
            "trace_road_id": batch.trace_road_id,
            "temporal_info": batch.temporal_info,
            "trace_distance_mat": batch.trace_distance_mat,
            "trace_time_interval_mat": batch.trace_time_interval_mat,
            "trace_len": batch.trace_len,
            "destination_road_id": batch.destination_road_id,
            "candidate_road_id": batch.candidate_road_id,
            "metric_dis": batch.metric_dis,
            "metric_angle": batch.metric_angle,
        },
    });
    std::fs::write(out, serde_json::to_string_pretty(&value)?)?;
    Ok(())
}
