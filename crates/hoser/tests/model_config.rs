//! `HoserConfig` as a config section: serde keys and defaults, and `try_init` naming every problem
//! instead of panicking.

use burn::backend::Flex;
use hoser::model::HoserConfig;

#[test]
fn config_keys_are_the_dimensions_and_the_tables_come_from_the_data() {
    let value = serde_json::to_value(HoserConfig::default()).unwrap();
    let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = vec![
        "road_id_emb_dim",
        "len_emb_dim",
        "type_emb_dim",
        "lon_emb_dim",
        "lat_emb_dim",
        "num_heads",
        "num_layers",
        "upstream_angle_quirk",
    ];
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected);
    let c: HoserConfig = serde_json::from_str(r#"{"num_heads": 4}"#).unwrap();
    assert_eq!(c, HoserConfig { num_heads: 4, ..HoserConfig::upstream(0, 0, 0) });
    assert!(serde_json::from_str::<HoserConfig>(r#"{"num_roads": 5}"#).is_err(), "tables are not config keys");
    assert_eq!(c.with_tables(10, 2, 3), HoserConfig { num_heads: 4, ..HoserConfig::upstream(10, 2, 3) });
}

#[test]
fn try_init_names_every_problem_instead_of_panicking() {
    let bad = HoserConfig { num_heads: 7, num_layers: 0, ..HoserConfig::upstream(10, 0, 3) };
    let Err(err) = bad.try_init::<Flex>(&Default::default()) else { panic!("an invalid config built a model") };
    let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["num_layers", "num_heads", "num_road_types"], "{err}");
    assert!(err.to_string().contains("not divisible by 7 heads"), "{err}");
    assert!(HoserConfig::upstream(10, 2, 3).try_init::<Flex>(&Default::default()).is_ok());
}
