//! Real pretrained models (fetched from PyPI wheels, or the shared model folder) run by each
//! engine and compared with onnxruntime's outputs in Python for the same inputs: the
//! conformance suite's real-model half (`tract::*`, `onnxruntime::*`).

mod support;

use cloak_engine::{Engine, EngineError, EngineKind};
use cloak_test_support::models::reference::{self, Reference};

/// Runs a cached model on its reference inputs and checks every output against onnxruntime's.
fn matches_reference(engine: &Engine, stem: &str, atol: f64, rtol: f64) {
    let Some(Reference {
        onnx,
        inputs,
        outputs,
        ..
    }) = reference::load(stem)
    else {
        return;
    };
    let model = engine.load(stem, &onnx).unwrap();
    let names: Vec<&str> = model.inputs().iter().map(|s| s.name()).collect();
    let expected_names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, expected_names, "{stem}: input names and order");
    let actual = model.session().run(inputs).unwrap();
    assert_eq!(actual.len(), outputs.len(), "{stem}: output count");
    for ((name, tensor), (expected_name, expected)) in actual.iter().zip(&outputs) {
        assert_eq!(name, expected_name, "{stem}: output order");
        let worst = reference::worst_error(tensor, expected, atol, rtol);
        let kind = engine.info().kind();
        eprintln!("{kind} {stem}/{name}: worst error {worst:.3} of tolerance");
        assert!(
            worst <= 1.0,
            "{kind} {stem}/{name}: {worst:.2}x the tolerance"
        );
    }
}

fn pp_ocr_text_recognition(engine: &Engine) {
    matches_reference(engine, "ppocr-rec", 1e-4, 1e-3);
}

fn pp_ocr_direction_classifier(engine: &Engine) {
    matches_reference(engine, "ppocr-cls", 1e-4, 1e-3);
}

fn silero_vad_16k(engine: &Engine) {
    matches_reference(engine, "silero-vad-16k", 1e-5, 1e-3);
}

fn minilm_int8_encoder(engine: &Engine) {
    matches_reference(engine, "minilm-l6-int8", 1e-3, 1e-3);
}

fn minilm_fp32_encoder(engine: &Engine) {
    matches_reference(engine, "minilm-l6", 1e-3, 1e-3);
}

fn efficientnet_lite0(engine: &Engine) {
    matches_reference(engine, "efficientnet-lite0", 1e-3, 1e-3);
}

fn pp_ocr_detection(engine: &Engine) {
    matches_reference(engine, "ppocr-det", 1e-4, 1e-3);
}

/// The default Silero VAD model branches on its sample rate with `If`. ONNX Runtime runs it and
/// must match. tract 0.23 cannot analyse it (it types both branches); its inputs are dynamic, so
/// it is compiled on the first request, which must either match or fail with an error naming
/// the operator (the 16 kHz variant above is the one tract serves).
fn silero_vad_with_if(engine: &Engine) {
    let Some(reference) = reference::load("silero-vad") else {
        return;
    };
    if engine.info().kind() == EngineKind::OnnxRuntime {
        return matches_reference(engine, "silero-vad", 1e-5, 1e-3);
    }
    let outcome = engine
        .load("silero-vad", &reference.onnx)
        .and_then(|model| model.session().run(reference.inputs.clone()));
    match outcome {
        Ok(_) => matches_reference(engine, "silero-vad", 1e-5, 1e-3),
        Err(EngineError::Load(message) | EngineError::Shape(message)) => {
            eprintln!("silero-vad does not compile on tract: {message}");
            assert!(message.contains(" If"), "{message}");
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

conformance!(
    pp_ocr_text_recognition,
    pp_ocr_direction_classifier,
    silero_vad_16k,
    minilm_int8_encoder,
    minilm_fp32_encoder,
    efficientnet_lite0,
    pp_ocr_detection,
    silero_vad_with_if,
);
