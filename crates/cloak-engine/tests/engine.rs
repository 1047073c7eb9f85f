//! The engine contract over small ONNX models built in memory — every data type, several inputs
//! and outputs, dynamic dimensions, sharing across threads, and every way a request can be wrong
//! — run against each backend: one conformance suite, every test once per engine (`tract::*`
//! and `onnxruntime::*`). The ONNX Runtime half needs the library (`.venv`'s `onnxruntime`
//! wheel, or `CLOAK_ONNXRUNTIME_LIB`) and says SKIPPED without it.

mod support;

use cloak_engine::{Dim, Engine, EngineError, PreparedModel};
use cloak_proto::tensor::{DataType, Tensor};
use support::{D, Elem, model, model_with_weights, node, value, weights, with_metadata};

/// `y = x + x` (or `y = not x` for BOOL) over `[batch, 3]`.
fn doubling(engine: &Engine, elem: Elem) -> PreparedModel {
    let op = if elem == Elem::Bool { "Not" } else { "Add" };
    let inputs: &[&str] = if elem == Elem::Bool {
        &["x"]
    } else {
        &["x", "x"]
    };
    let onnx = model(
        vec![node(op, inputs, &["y"])],
        vec![value("x", elem, &[D::Named("batch"), D::Fixed(3)])],
        vec![value("y", elem, &[D::Named("batch"), D::Fixed(3)])],
    );
    engine.load("doubling", &onnx).unwrap()
}

fn run_one(model: &PreparedModel, input: Tensor) -> Tensor {
    let mut outputs = model.session().run(vec![("x".to_owned(), input)]).unwrap();
    assert_eq!(outputs.len(), 1);
    let (name, tensor) = outputs.remove(0);
    assert_eq!(name, "y");
    tensor
}

fn every_data_type_computes_with_its_own_type(engine: &Engine) {
    macro_rules! check {
        ($elem:expr, $dtype:expr, $t:ty, [$($v:expr),*]) => {{
            let model = doubling(engine, $elem);
            assert_eq!(model.inputs()[0].dtype(), $dtype);
            assert_eq!(model.outputs()[0].dtype(), $dtype);
            let values: Vec<$t> = vec![$($v),*];
            let out = run_one(&model, Tensor::from_values(vec![2, 3], &values).unwrap());
            assert_eq!(out.dtype(), $dtype);
            assert_eq!(out.shape(), [2, 3]);
            let expected: Vec<$t> = values.iter().map(|v| *v + *v).collect();
            assert_eq!(out.to_values::<$t>().unwrap(), expected);
        }};
    }
    check!(
        Elem::Float,
        DataType::Fp32,
        f32,
        [0.5, -1.25, 3.0, 1e-3, -0.0, 7.5]
    );
    check!(
        Elem::Double,
        DataType::Fp64,
        f64,
        [0.1, -2.5, 1e100, 3.0, 4.0, -5.0]
    );
    check!(Elem::Int8, DataType::Int8, i8, [1, -2, 3, -4, 63, -64]);
    check!(Elem::Int16, DataType::Int16, i16, [1, -2, 300, -4000, 5, 6]);
    check!(Elem::Int32, DataType::Int32, i32, [1, -2, 70_000, -4, 5, 6]);
    check!(
        Elem::Int64,
        DataType::Int64,
        i64,
        [1, -2, 1 << 40, -4, 5, 6]
    );
    check!(Elem::Uint8, DataType::Uint8, u8, [0, 1, 2, 100, 127, 3]);
    check!(Elem::Uint16, DataType::Uint16, u16, [0, 1, 2, 30_000, 5, 3]);
    check!(
        Elem::Uint32,
        DataType::Uint32,
        u32,
        [0, 1, 2, 1 << 30, 5, 3]
    );
    check!(
        Elem::Uint64,
        DataType::Uint64,
        u64,
        [0, 1, 2, 1 << 62, 5, 3]
    );

    // FP16 and BOOL have no arithmetic in Rust's std: compare bytes.
    let model = doubling(engine, Elem::Float16);
    assert_eq!(model.inputs()[0].dtype(), DataType::Fp16);
    let halves: Vec<u8> = [0.5f32, -1.25, 3.0, 2.0, -0.0, 7.5]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let out = run_one(
        &model,
        Tensor::new(DataType::Fp16, vec![2, 3], halves).unwrap(),
    );
    assert_eq!(out.dtype(), DataType::Fp16);
    let doubled: Vec<f32> = out
        .data()
        .chunks(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    assert_eq!(doubled, [1.0, -2.5, 6.0, 4.0, -0.0, 15.0]);

    let model = doubling(engine, Elem::Bool);
    let out = run_one(
        &model,
        Tensor::from_values(vec![2, 3], &[true, false, true, true, false, false]).unwrap(),
    );
    assert_eq!(
        out.to_values::<bool>().unwrap(),
        [false, true, false, false, true, true]
    );
}

/// `sum = a + b`, `product = a * b` over `[batch, 4]` FP32.
fn two_in_two_out(engine: &Engine) -> PreparedModel {
    engine.load("arith", &two_in_two_out_onnx()).unwrap()
}

fn two_in_two_out_onnx() -> Vec<u8> {
    let shape = [D::Named("batch"), D::Fixed(4)];
    model(
        vec![
            node("Add", &["a", "b"], &["sum"]),
            node("Mul", &["a", "b"], &["product"]),
        ],
        vec![
            value("a", Elem::Float, &shape),
            value("b", Elem::Float, &shape),
        ],
        vec![
            value("sum", Elem::Float, &shape),
            value("product", Elem::Float, &shape),
        ],
    )
}

fn rows(batch: usize, offset: f32) -> Tensor {
    let values: Vec<f32> = (0..batch * 4).map(|i| i as f32 + offset).collect();
    Tensor::from_values(vec![batch, 4], &values).unwrap()
}

fn signature_reports_names_types_and_dynamic_dimensions(engine: &Engine) {
    let model = two_in_two_out(engine);
    let names: Vec<&str> = model.inputs().iter().map(|s| s.name()).collect();
    assert_eq!(names, ["a", "b"]);
    let names: Vec<&str> = model.outputs().iter().map(|s| s.name()).collect();
    assert_eq!(names, ["sum", "product"]);
    assert_eq!(
        model.inputs()[0].shape(),
        [Dim::Dynamic("batch".to_owned()), Dim::Fixed(4)]
    );
    assert_eq!(model.inputs()[0].kserve_shape(), [-1, 4]);
    assert_eq!(model.outputs()[1].kserve_shape(), [-1, 4]);
}

fn several_inputs_and_outputs_at_any_batch_size(engine: &Engine) {
    let model = two_in_two_out(engine);
    for batch in [1, 3, 8] {
        let outputs = model
            .session()
            .run(vec![
                ("b".to_owned(), rows(batch, 1.0)),
                ("a".to_owned(), rows(batch, 0.0)),
            ])
            .unwrap();
        let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["sum", "product"], "outputs in model order");
        let sum = outputs[0].1.to_values::<f32>().unwrap();
        let product = outputs[1].1.to_values::<f32>().unwrap();
        for i in 0..batch * 4 {
            let (a, b) = (i as f32, i as f32 + 1.0);
            assert_eq!(sum[i], a + b);
            assert_eq!(product[i], a * b);
        }
        assert_eq!(outputs[0].1.shape(), [batch, 4]);
    }
}

fn one_prepared_model_serves_many_threads_at_once(engine: &Engine) {
    let model = two_in_two_out(engine);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let model = model.clone();
            std::thread::spawn(move || {
                let mut session = model.session();
                for round in 0..50 {
                    let offset = (t * 100 + round) as f32;
                    let out = session
                        .run(vec![
                            ("a".to_owned(), rows(2, offset)),
                            ("b".to_owned(), rows(2, 0.0)),
                        ])
                        .unwrap();
                    let sum = out[0].1.to_values::<f32>().unwrap();
                    assert_eq!(sum[0], offset);
                    assert_eq!(sum[7], offset + 14.0);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

fn every_malformed_request_gets_its_own_error(engine: &Engine) {
    let model = two_in_two_out(engine);
    let run = |inputs: Vec<(&str, Tensor)>| {
        model
            .session()
            .run(inputs.into_iter().map(|(n, t)| (n.to_owned(), t)).collect())
            .unwrap_err()
    };
    let ints = Tensor::from_values(vec![1, 4], &[1i32, 2, 3, 4]).unwrap();

    let err = run(vec![("a", rows(1, 0.0))]);
    assert_eq!(err, EngineError::MissingInput("b".to_owned()));
    let err = run(vec![
        ("a", rows(1, 0.0)),
        ("b", rows(1, 0.0)),
        ("c", rows(1, 0.0)),
    ]);
    assert_eq!(err, EngineError::UnknownInput("c".to_owned()));
    let err = run(vec![("a", rows(1, 0.0)), ("a", rows(1, 0.0))]);
    assert_eq!(err, EngineError::DuplicateInput("a".to_owned()));
    let err = run(vec![("a", ints), ("b", rows(1, 0.0))]);
    assert_eq!(
        err,
        EngineError::TypeMismatch {
            input: "a".to_owned(),
            expected: DataType::Fp32,
            actual: DataType::Int32
        }
    );
    let three_wide = Tensor::from_values(vec![1, 3], &[1f32, 2.0, 3.0]).unwrap();
    let err = run(vec![("a", three_wide), ("b", rows(1, 0.0))]);
    assert_eq!(err.code(), "shape-mismatch");
    assert_eq!(
        err.to_string(),
        "input a: shape [1, 3] does not fit the model's [batch, 4]"
    );
    let flat = Tensor::from_values(vec![4], &[1f32, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(
        run(vec![("a", flat), ("b", rows(1, 0.0))]).code(),
        "shape-mismatch"
    );
    let err = run(vec![("a", rows(2, 0.0)), ("b", rows(3, 0.0))]);
    assert_eq!(
        err,
        EngineError::DimensionConflict {
            input: "b".to_owned(),
            dimension: "batch".to_owned(),
            value: 3,
            earlier: 2
        }
    );
    for err in [
        EngineError::MissingInput(String::new()),
        EngineError::DimensionConflict {
            input: String::new(),
            dimension: String::new(),
            value: 0,
            earlier: 0,
        },
    ] {
        assert!(err.is_client_error());
    }
}

fn a_session_survives_a_refused_request(engine: &Engine) {
    let model = two_in_two_out(engine);
    let mut session = model.session();
    assert!(session.run(vec![("a".to_owned(), rows(1, 0.0))]).is_err());
    let out = session
        .run(vec![
            ("a".to_owned(), rows(1, 0.0)),
            ("b".to_owned(), rows(1, 0.0)),
        ])
        .unwrap();
    assert_eq!(out[0].1.to_values::<f32>().unwrap(), [0.0, 2.0, 4.0, 6.0]);
}

fn models_that_do_not_load_say_why(engine: &Engine) {
    let err = engine.load("junk", b"not an onnx model").unwrap_err();
    assert_eq!(err.code(), "model-load-failed");

    let onnx = model(
        vec![node("NoSuchOperator", &["x"], &["y"])],
        vec![value("x", Elem::Float, &[D::Fixed(1)])],
        vec![value("y", Elem::Float, &[D::Fixed(1)])],
    );
    let err = engine.load("unknown-op", &onnx).unwrap_err();
    assert_eq!(err.code(), "model-load-failed");
    assert!(err.to_string().contains("NoSuchOperator"), "{err}");

    let onnx = model(
        vec![node("Identity", &["x"], &["y"])],
        vec![value("x", Elem::String, &[D::Fixed(1)])],
        vec![value("y", Elem::String, &[D::Fixed(1)])],
    );
    let err = engine.load("strings", &onnx).unwrap_err();
    assert_eq!(err.code(), "unsupported-type", "{err}");
}

fn debug_output_names_the_model_not_its_weights(engine: &Engine) {
    let model = two_in_two_out(engine);
    let shown = format!("{model:?} {:?}", model.session());
    assert!(shown.contains("arith"), "{shown}");
}

fn plans_compiled_per_shape_stay_correct_past_the_cache_bound(engine: &Engine) {
    let model = two_in_two_out(engine);
    let mut session = model.session();
    // More distinct batch sizes than plans are kept, then the first again.
    for batch in (1..=20).chain([1, 7]) {
        let out = session
            .run(vec![
                ("a".to_owned(), rows(batch, 1.0)),
                ("b".to_owned(), rows(batch, 0.0)),
            ])
            .unwrap();
        assert_eq!(out[0].1.shape()[0], batch);
        let expected: Vec<f32> = rows(batch, 1.0)
            .to_values::<f32>()
            .unwrap()
            .iter()
            .zip(rows(batch, 0.0).to_values::<f32>().unwrap())
            .map(|(a, b)| a + b)
            .collect();
        assert_eq!(out[0].1.to_values::<f32>().unwrap(), expected);
    }
}

/// A client-chosen index past the end of a `Gather`: whatever tract does with it (an error or
/// a panic inside the kernel), the request fails with a typed error that names no value, and
/// the same prepared model keeps serving.
fn an_out_of_range_index_fails_only_its_request(engine: &Engine) {
    let onnx = model(
        vec![node("Gather", &["data", "index"], &["y"])],
        vec![
            value("data", Elem::Float, &[D::Fixed(3)]),
            value("index", Elem::Int64, &[D::Fixed(1)]),
        ],
        vec![value("y", Elem::Float, &[D::Fixed(1)])],
    );
    let model = engine.load("gather", &onnx).unwrap();
    let data = Tensor::from_values(vec![3], &[10.5f32, 20.5, 30.5]).unwrap();
    let run = |index: i64| {
        model.session().run(vec![
            ("data".to_owned(), data.clone()),
            (
                "index".to_owned(),
                Tensor::from_values(vec![1], &[index]).unwrap(),
            ),
        ])
    };
    let err = run(1_000_000).unwrap_err();
    assert!(
        matches!(err.code(), "engine-panicked" | "inference-failed"),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        !message.contains("1000000") && !message.contains("10.5"),
        "{message}"
    );
    let out = run(2).unwrap();
    assert_eq!(out[0].1.to_values::<f32>().unwrap(), [30.5]);
}

fn a_reused_run_state_answers_each_request_from_its_own_inputs(engine: &Engine) {
    // Sessions come and go per request; their run states are reused. Each answer must still
    // depend on its own request only, whatever ran before, at any batch size.
    let model = two_in_two_out(engine);
    for (round, batch) in [2usize, 2, 5, 2, 5].into_iter().enumerate() {
        let offset = 100.0 * round as f32;
        let outputs = model
            .session()
            .run(vec![
                ("a".to_owned(), rows(batch, offset)),
                ("b".to_owned(), rows(batch, 1.0)),
            ])
            .unwrap();
        let fresh = engine
            .load("arith", &two_in_two_out_onnx())
            .unwrap()
            .session()
            .run(vec![
                ("a".to_owned(), rows(batch, offset)),
                ("b".to_owned(), rows(batch, 1.0)),
            ])
            .unwrap();
        assert_eq!(outputs, fresh, "round {round}");
    }
}

/// A model that fails on its constants is reported by step, node and operator — never with the
/// values of the constants, which are the owner's confidential weights (the message reaches the
/// client, the repository index and the log).
fn an_engine_error_names_the_node_but_never_the_weights(engine: &Engine) {
    let onnx = model_with_weights(
        vec![node("Add", &["x", "w"], &["y"])],
        vec![value("x", Elem::Float, &[D::Fixed(1), D::Fixed(3)])],
        vec![value("y", Elem::Float, &[D::Fixed(1), D::Fixed(3)])],
        vec![weights("w", &[4], &[1234.5, 8765.25, 4242.125, 1717.75])],
    );
    let input = Tensor::from_values(vec![1, 3], &[1.0f32, 2.0, 3.0]).unwrap();
    let err = match engine.load("secret", &onnx) {
        Err(e) => e,
        Ok(model) => model
            .session()
            .run(vec![("x".to_owned(), input)])
            .unwrap_err(),
    };
    let message = err.to_string();
    for value in ["1234", "8765", "4242", "1717"] {
        assert!(!message.contains(value), "{message}");
    }
    assert!(message.contains("Add"), "{message}");
}

/// Runs the two-input model at `batch`, checking the sum.
fn run_batch(model: &PreparedModel, batch: usize) {
    let out = model
        .session()
        .run(vec![
            ("a".to_owned(), rows(batch, 1.0)),
            ("b".to_owned(), rows(batch, 0.0)),
        ])
        .unwrap();
    assert_eq!(out[0].1.shape(), [batch, 4]);
}

#[test]
fn tract_keeps_the_shapes_used_most_recently_and_counts_compilations() {
    let model = two_in_two_out(&Engine::tract());
    assert_eq!(
        model.plans_compiled(),
        0,
        "dynamic: nothing to compile at load"
    );
    run_batch(&model, 1);
    assert_eq!(model.plans_compiled(), 1);
    // A hot shape between sixteen others stays cached (least recently used goes first).
    for batch in 2..=17 {
        run_batch(&model, batch);
        run_batch(&model, 1);
    }
    assert_eq!(
        model.plans_compiled(),
        17,
        "batch 1 was never compiled again"
    );
    // Cycling more shapes than are kept recompiles: counted, never wrong.
    for batch in (20..=36).chain(20..=36) {
        run_batch(&model, batch);
    }
    assert_eq!(model.plans_compiled(), 17 + 34);
}

#[test]
fn declared_shapes_are_compiled_at_load_and_never_evicted() {
    let onnx = with_metadata(
        &two_in_two_out_onnx(),
        "cloak.precompile",
        "1x4,1x4; 8x4,8x4",
    );
    let model = Engine::tract().load("arith", &onnx).unwrap();
    assert_eq!(model.plans_compiled(), 2, "compiled at load");
    for batch in (20..=40).chain([1, 8]) {
        run_batch(&model, batch);
    }
    assert_eq!(model.plans_compiled(), 2 + 21, "1 and 8 stayed compiled");
    // ONNX Runtime plans inside its session: the declaration is accepted and counts nothing.
    if let Some(engine) = support::onnxruntime(1) {
        let model = engine.load("arith", &onnx).unwrap();
        run_batch(&model, 8);
        assert_eq!(model.plans_compiled(), 0);
    }
}

#[test]
fn a_declaration_that_does_not_fit_the_model_fails_its_load() {
    for (value, why) in [
        ("1x5,1x5", "does not fit input a"),
        ("1x4", "names 1 inputs; the model has 2"),
        ("1xfour,1x4", "a dimension is not a size"),
    ] {
        let onnx = with_metadata(&two_in_two_out_onnx(), "cloak.precompile", value);
        let error = Engine::tract().load("arith", &onnx).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("cloak.precompile") && message.contains(why),
            "{message}"
        );
    }
}

conformance!(
    every_data_type_computes_with_its_own_type,
    signature_reports_names_types_and_dynamic_dimensions,
    several_inputs_and_outputs_at_any_batch_size,
    one_prepared_model_serves_many_threads_at_once,
    every_malformed_request_gets_its_own_error,
    a_session_survives_a_refused_request,
    models_that_do_not_load_say_why,
    debug_output_names_the_model_not_its_weights,
    plans_compiled_per_shape_stay_correct_past_the_cache_bound,
    an_out_of_range_index_fails_only_its_request,
    a_reused_run_state_answers_each_request_from_its_own_inputs,
    an_engine_error_names_the_node_but_never_the_weights,
);
