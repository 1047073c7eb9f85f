use half::f16;
use proptest::prelude::*;

use super::*;
use crate::tensor::{DataType, Tensor};

fn parse(json: &str) -> Result<InferRequest, KserveError> {
    InferRequest::parse(json.as_bytes(), None, &Limits::default())
}

fn parse_err(json: &str) -> KserveError {
    match parse(json) {
        Ok(request) => panic!("parsed {request:?}"),
        Err(err) => err,
    }
}

/// A body with a JSON header and binary tensors, as tritonclient builds one.
fn binary_body(header: &str, binary: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut body = header.as_bytes().to_vec();
    for part in binary {
        body.extend_from_slice(part);
    }
    (body, header.len())
}

#[test]
fn json_request_with_every_fixed_size_type() {
    let request = parse(
        r#"{"id":"r1","inputs":[
            {"name":"f32","datatype":"FP32","shape":[2,2],"data":[[1.5,-2],[3e2,0]]},
            {"name":"f64","datatype":"FP64","shape":[1],"data":[0.1]},
            {"name":"f16","datatype":"FP16","shape":[2],"data":[1.0,65504]},
            {"name":"i8","datatype":"INT8","shape":[2],"data":[-128,127]},
            {"name":"i16","datatype":"INT16","shape":[1],"data":[-32768]},
            {"name":"i32","datatype":"INT32","shape":[1],"data":[2147483647]},
            {"name":"i64","datatype":"INT64","shape":[2],"data":[-9223372036854775808,9223372036854775807]},
            {"name":"u8","datatype":"UINT8","shape":[1],"data":[255]},
            {"name":"u16","datatype":"UINT16","shape":[1],"data":[65535]},
            {"name":"u32","datatype":"UINT32","shape":[1],"data":[4294967295]},
            {"name":"u64","datatype":"UINT64","shape":[1],"data":[18446744073709551615]},
            {"name":"b","datatype":"BOOL","shape":[3],"data":[true,false,true]},
            {"name":"s","datatype":"BYTES","shape":[2],"data":["héllo",""]}
        ]}"#,
    )
    .unwrap();
    assert_eq!(request.id(), Some("r1"));
    assert!(request.outputs().is_empty());
    assert!(!request.binary_data_output());
    let f32s = request.input("f32").unwrap();
    assert_eq!(f32s.shape(), &[2, 2]);
    assert_eq!(
        f32s.to_values::<f32>().unwrap(),
        vec![1.5, -2.0, 300.0, 0.0]
    );
    assert_eq!(
        request.input("f64").unwrap().to_values::<f64>().unwrap(),
        vec![0.1]
    );
    assert_eq!(
        request.input("f16").unwrap().to_values::<f16>().unwrap(),
        vec![f16::from_f32(1.0), f16::MAX]
    );
    assert_eq!(
        request.input("i8").unwrap().to_values::<i8>().unwrap(),
        vec![-128, 127]
    );
    assert_eq!(
        request.input("i16").unwrap().to_values::<i16>().unwrap(),
        vec![i16::MIN]
    );
    assert_eq!(
        request.input("i32").unwrap().to_values::<i32>().unwrap(),
        vec![i32::MAX]
    );
    assert_eq!(
        request.input("i64").unwrap().to_values::<i64>().unwrap(),
        vec![i64::MIN, i64::MAX]
    );
    assert_eq!(request.input("u8").unwrap().data(), &[255]);
    assert_eq!(
        request.input("u16").unwrap().to_values::<u16>().unwrap(),
        vec![u16::MAX]
    );
    assert_eq!(
        request.input("u32").unwrap().to_values::<u32>().unwrap(),
        vec![u32::MAX]
    );
    assert_eq!(
        request.input("u64").unwrap().to_values::<u64>().unwrap(),
        vec![u64::MAX]
    );
    assert_eq!(request.input("b").unwrap().data(), &[1, 0, 1]);
    let strings: Vec<&[u8]> = request
        .input("s")
        .unwrap()
        .byte_strings()
        .unwrap()
        .collect();
    assert_eq!(strings, vec!["héllo".as_bytes(), b""]);
}

#[test]
fn fields_in_any_order_and_unknown_fields_skipped() {
    let request = parse(
        r#"{"extra":{"deep":[1,[2,{"x":null}]]},"inputs":[
            {"data":[1,2,3],"shape":[3],"x":"y","datatype":"INT32","name":"a"}],
            "outputs":[{"name":"o","parameters":{"binary_data":true}}],
            "parameters":{"binary_data_output":false,"custom":"kept","n":-3,"f":0.5}}"#,
    )
    .unwrap();
    assert_eq!(
        request.input("a").unwrap().to_values::<i32>().unwrap(),
        vec![1, 2, 3]
    );
    assert_eq!(
        request.outputs(),
        &[RequestedOutput::new("o").with_encoding(TensorEncoding::Binary)]
    );
    assert_eq!(request.output_encoding("o"), TensorEncoding::Binary);
    assert_eq!(request.output_encoding("other"), TensorEncoding::Json);
    let parameters = request.parameters();
    assert_eq!(
        parameters.get("custom").and_then(Parameter::as_str),
        Some("kept")
    );
    assert_eq!(parameters.get("n").and_then(Parameter::as_i64), Some(-3));
    assert_eq!(parameters.get("f"), Some(&Parameter::Float(0.5)));
    assert!(parameters.get("binary_data_output").is_none());
}

#[test]
fn binary_data_output_sets_the_default_and_outputs_override_it() {
    let request = parse(
        r#"{"inputs":[{"name":"a","datatype":"INT32","shape":[0],"data":[]}],
            "outputs":[{"name":"j","parameters":{"binary_data":false}},{"name":"d"}],
            "parameters":{"binary_data_output":true}}"#,
    )
    .unwrap();
    assert!(request.binary_data_output());
    assert_eq!(request.output_encoding("j"), TensorEncoding::Json);
    assert_eq!(request.output_encoding("d"), TensorEncoding::Binary);
    assert_eq!(request.output_encoding("unlisted"), TensorEncoding::Binary);
    assert_eq!(request.input("a").unwrap().element_count(), 0);
}

#[test]
fn binary_tensors_as_tritonclient_sends_them() {
    let floats: Vec<u8> = [1.0f32, 2.0, -3.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let strings = [3u32.to_le_bytes().as_slice(), b"abc", &0u32.to_le_bytes()].concat();
    let header = format!(
        r#"{{"inputs":[
            {{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{{"binary_data_size":{}}}}},
            {{"name":"s","datatype":"BYTES","shape":[2],"parameters":{{"binary_data_size":{}}}}},
            {{"name":"j","datatype":"INT64","shape":[1],"data":[7]}}]}}"#,
        floats.len(),
        strings.len()
    );
    let (body, header_len) = binary_body(&header, &[&floats, &strings]);
    let request = InferRequest::parse(&body, Some(header_len), &Limits::default()).unwrap();
    assert_eq!(
        request.input("x").unwrap().to_values::<f32>().unwrap(),
        vec![1.0, 2.0, -3.5]
    );
    let strings: Vec<&[u8]> = request
        .input("s")
        .unwrap()
        .byte_strings()
        .unwrap()
        .collect();
    assert_eq!(strings, vec![b"abc".as_slice(), b""]);
    assert_eq!(
        request.input("j").unwrap().to_values::<i64>().unwrap(),
        vec![7]
    );
}

#[test]
fn binary_part_must_be_used_exactly() {
    let header = r#"{"inputs":[{"name":"x","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}}]}"#;
    let data = [0u8; 9];
    let (body, len) = binary_body(header, &[&data[..7]]);
    let err = InferRequest::parse(&body, Some(len), &Limits::default()).unwrap_err();
    assert_eq!(err.code(), "binary-data-short");
    let (body, len) = binary_body(header, &[&data]);
    let err = InferRequest::parse(&body, Some(len), &Limits::default()).unwrap_err();
    assert_eq!(err.code(), "binary-data-trailing");
    let (body, _) = binary_body(header, &[&data[..8]]);
    let err = InferRequest::parse(&body, Some(body.len() + 1), &Limits::default()).unwrap_err();
    assert_eq!(err.code(), "header-length-exceeds-body");
    // A size that disagrees with the shape is refused before any copy.
    let header = r#"{"inputs":[{"name":"x","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":4}}]}"#;
    let (body, len) = binary_body(header, &[&data[..4]]);
    let err = InferRequest::parse(&body, Some(len), &Limits::default()).unwrap_err();
    assert_eq!(err.code(), "invalid-tensor");
    // Without a header length the whole body is the header: no binary part to take from.
    let header = r#"{"inputs":[{"name":"x","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}}]}"#;
    let (body, len) = binary_body(header, &[&data[..8]]);
    assert_eq!(
        InferRequest::parse(&body, None, &Limits::default())
            .unwrap_err()
            .code(),
        "binary-data-short"
    );
    assert!(InferRequest::parse(&body, Some(len), &Limits::default()).is_ok());
}

#[test]
fn malformed_requests_get_their_own_codes() {
    let cases: &[(&str, &str)] = &[
        ("", "invalid-json"),
        ("{", "invalid-json"),
        ("[]", "header-not-object"),
        (r#"{"inputs":[]} x"#, "invalid-json"),
        (r#"{"inputs":{}}"#, "field-type-mismatch"),
        (
            r#"{"inputs":[{"datatype":"FP32","shape":[1],"data":[1]}]}"#,
            "missing-field",
        ),
        (
            r#"{"inputs":[{"name":"a","shape":[1],"data":[1]}]}"#,
            "missing-field",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","data":[1]}]}"#,
            "missing-field",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1]}]}"#,
            "missing-data",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"BF16","shape":[1],"data":[1]}]}"#,
            "unsupported-datatype",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[-1],"data":[]}]}"#,
            "negative-dimension",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1.5],"data":[1]}]}"#,
            "field-type-mismatch",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[4294967296,4294967296,4294967296],"data":[]}]}"#,
            "shape-overflow",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"data":[1]}]}"#,
            "rank-too-high",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[2],"data":[1]}]}"#,
            "element-count-mismatch",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[1,2]}]}"#,
            "element-count-mismatch",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"UINT8","shape":[1],"data":[256]}]}"#,
            "element-out-of-range",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"INT8","shape":[1],"data":[-129]}]}"#,
            "element-out-of-range",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[1e39]}]}"#,
            "element-out-of-range",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"INT32","shape":[1],"data":[1.5]}]}"#,
            "element-type-mismatch",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"INT32","shape":[1],"data":["1"]}]}"#,
            "element-type-mismatch",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"BOOL","shape":[1],"data":[1]}]}"#,
            "element-type-mismatch",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"BYTES","shape":[1],"data":[1]}]}"#,
            "element-type-mismatch",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":1}]}"#,
            "malformed-data",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[[[1]]]}]}"#,
            "malformed-data",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[1],"parameters":{"binary_data_size":4}}]}"#,
            "binary-and-json-data",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":-4}}]}"#,
            "invalid-parameter",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[1],"parameters":{"shared_memory_region":"r"}}]}"#,
            "unsupported-parameter",
        ),
        (
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[1]},{"name":"a","datatype":"FP32","shape":[1],"data":[1]}]}"#,
            "duplicate-input",
        ),
        (
            r#"{"inputs":[],"outputs":[{"name":"o"},{"name":"o"}]}"#,
            "duplicate-output",
        ),
        (r#"{"inputs":[],"inputs":[]}"#, "duplicate-key"),
        (
            r#"{"inputs":[{"name":"a","name":"b","datatype":"FP32","shape":[1],"data":[1]}]}"#,
            "duplicate-key",
        ),
        (
            r#"{"inputs":[],"parameters":{"binary_data_output":"yes"}}"#,
            "invalid-parameter",
        ),
        (r#"{"inputs":[],"parameters":[]}"#, "field-type-mismatch"),
        (
            r#"{"inputs":[],"parameters":{"p":{"nested":1}}}"#,
            "field-type-mismatch",
        ),
    ];
    for (json, code) in cases {
        let err = parse_err(json);
        assert_eq!(err.code(), *code, "{json}: {err}");
        assert!(err.status() == 400 || err.status() == 501, "{json}");
    }
    assert_eq!(
        parse_err(r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[1],"parameters":{"shared_memory_offset":0}}]}"#).status(),
        501
    );
}

#[test]
fn missing_inputs_are_refused() {
    assert_eq!(parse_err("{}").code(), "missing-field");
}

#[test]
fn deep_json_is_refused_without_recursing_far() {
    let deep = format!(
        r#"{{"inputs":[],"x":{}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    assert_eq!(parse_err(&deep).code(), "json-too-deep");
    // Far deeper than serde_json's own recursion limit: still a typed error.
    let deeper = format!(
        r#"{{"inputs":[],"x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(parse_err(&deeper).code(), "json-too-deep");
    let ok = format!(
        r#"{{"inputs":[],"x":{}{}}}"#,
        "[".repeat(20),
        "]".repeat(20)
    );
    assert!(parse(&ok).is_ok());
}

#[test]
fn limits_are_checked_before_allocating() {
    let limits = Limits {
        max_elements: 10,
        max_inputs: 2,
        max_outputs: 1,
    };
    // A tiny body claiming a huge tensor: refused on the element budget.
    let huge = r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1000000000],"data":[]}]}"#;
    let err = InferRequest::parse(huge.as_bytes(), None, &limits).unwrap_err();
    assert_eq!(err, KserveError::TooManyElements { limit: 10 });
    // With the default budget too (16 Mi elements).
    assert_eq!(parse_err(huge).code(), "too-many-elements");
    // The budget is over all tensors.
    let two = r#"{"inputs":[{"name":"a","datatype":"INT8","shape":[6],"data":[1,2,3,4,5,6]},
                             {"name":"b","datatype":"INT8","shape":[5],"data":[1,2,3,4,5]}]}"#;
    assert_eq!(
        InferRequest::parse(two.as_bytes(), None, &limits)
            .unwrap_err()
            .code(),
        "too-many-elements"
    );
    let three = r#"{"inputs":[{"name":"a","datatype":"INT8","shape":[0],"data":[]},
        {"name":"b","datatype":"INT8","shape":[0],"data":[]},{"name":"c","datatype":"INT8","shape":[0],"data":[]}]}"#;
    assert_eq!(
        InferRequest::parse(three.as_bytes(), None, &limits).unwrap_err(),
        KserveError::TooManyInputs { limit: 2 }
    );
    let outputs = r#"{"inputs":[],"outputs":[{"name":"a"},{"name":"b"}]}"#;
    assert_eq!(
        InferRequest::parse(outputs.as_bytes(), None, &limits).unwrap_err(),
        KserveError::TooManyOutputs { limit: 1 }
    );
    // A huge binary tensor with a tiny binary part: the budget, not a short copy.
    let header = r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[4000000000],"parameters":{"binary_data_size":16000000000}}]}"#;
    let (body, len) = binary_body(header, &[&[0; 8]]);
    assert_eq!(
        InferRequest::parse(&body, Some(len), &Limits::default())
            .unwrap_err()
            .code(),
        "too-many-elements"
    );
}

#[test]
fn errors_never_echo_data_and_cut_long_names() {
    let secret = "s3cr3t-value-0123456789";
    let cases = [
        format!(
            r#"{{"inputs":[{{"name":"a","datatype":"BYTES","shape":[1],"data":["{secret}",1]}}]}}"#
        ),
        format!(
            r#"{{"inputs":[{{"name":"a","datatype":"INT32","shape":[1],"data":["{secret}"]}}]}}"#
        ),
        format!(
            r#"{{"inputs":[{{"name":"a","datatype":"BOOL","shape":[2],"data":[true,"{secret}"]}}]}}"#
        ),
        r#"{"inputs":[{"name":"a","datatype":"UINT8","shape":[1],"data":[123456789]}]}"#.to_owned(),
        r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[31415926e300]}]}"#
            .to_owned(),
    ];
    for json in &cases {
        let message = parse_err(json).to_string();
        assert!(!message.contains(secret), "{message}");
        assert!(!message.contains("123456789"), "{message}");
        assert!(!message.contains("31415926"), "{message}");
    }
    let long = "n".repeat(500);
    let json =
        format!(r#"{{"inputs":[{{"name":"{long}","datatype":"XX","shape":[1],"data":[1]}}]}}"#);
    let message = parse_err(&json).to_string();
    assert!(message.len() < 200, "{message}");
}

#[test]
fn response_round_trips_json_and_binary() {
    let outputs = vec![
        NamedTensor::new(
            "probs",
            Tensor::from_values(vec![1, 3], &[0.25f32, 0.5, 0.25]).unwrap(),
        ),
        NamedTensor::new("ids", Tensor::from_values(vec![2], &[-1i64, 9]).unwrap()),
        NamedTensor::new(
            "mask",
            Tensor::new(DataType::Bool, vec![2], vec![0, 1]).unwrap(),
        ),
        NamedTensor::new(
            "half",
            Tensor::from_values(vec![1], &[f16::from_f32(0.5)]).unwrap(),
        ),
        NamedTensor::new(
            "text",
            Tensor::from_byte_strings(vec![2], &[b"ok".as_slice(), &[0xff, 0]]).unwrap(),
        ),
    ];
    let response = InferResponse::new("m", outputs.clone())
        .with_model_version("1")
        .with_id("req-7");
    // `text` holds non-UTF-8 bytes: as JSON it is refused with advice, as binary it travels.
    let err = response.encode(|_| TensorEncoding::Json).unwrap_err();
    assert_eq!(err.code(), "non-utf8-json");
    assert!(err.to_string().contains("binary_data"));
    let mixed = response
        .encode(|name| {
            if name == "text" || name == "ids" {
                TensorEncoding::Binary
            } else {
                TensorEncoding::Json
            }
        })
        .unwrap();
    let header_len = mixed.header_len().unwrap();
    assert_eq!(mixed.content_type(), CONTENT_TYPE_BINARY);
    let header: serde_json::Value = serde_json::from_slice(&mixed.body()[..header_len]).unwrap();
    assert_eq!(header["model_name"], "m");
    assert_eq!(header["model_version"], "1");
    assert_eq!(header["id"], "req-7");
    assert_eq!(
        header["outputs"][0]["data"],
        serde_json::json!([0.25, 0.5, 0.25])
    );
    assert_eq!(header["outputs"][0]["shape"], serde_json::json!([1, 3]));
    assert_eq!(header["outputs"][0]["datatype"], "FP32");
    assert_eq!(header["outputs"][1]["parameters"]["binary_data_size"], 16);
    assert!(header["outputs"][1].get("data").is_none());
    assert_eq!(
        header["outputs"][2]["data"],
        serde_json::json!([false, true])
    );
    let parsed = InferResponse::parse(mixed.body(), Some(header_len), &Limits::default()).unwrap();
    assert_eq!(parsed.model_name(), "m");
    assert_eq!(parsed.model_version(), Some("1"));
    assert_eq!(parsed.id(), Some("req-7"));
    assert_eq!(parsed.outputs(), outputs.as_slice());

    let all_binary = response.encode(|_| TensorEncoding::Binary).unwrap();
    let parsed = InferResponse::parse(
        all_binary.body(),
        all_binary.header_len(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(parsed.into_outputs(), outputs);
}

#[test]
fn json_only_bodies_have_no_header_length() {
    let response = InferResponse::new(
        "m",
        vec![NamedTensor::new(
            "y",
            Tensor::from_values(vec![1], &[1.0f64]).unwrap(),
        )],
    );
    let body = response.encode(|_| TensorEncoding::Json).unwrap();
    assert_eq!(body.header_len(), None);
    assert_eq!(body.content_type(), CONTENT_TYPE_JSON);
    let value: serde_json::Value = serde_json::from_slice(body.body()).unwrap();
    assert!(value.get("model_version").is_none());
    assert!(value.get("id").is_none());
    assert!(format!("{body:?}").contains("bytes"));
}

#[test]
fn non_finite_floats_need_binary_output() {
    let response = InferResponse::new(
        "m",
        vec![NamedTensor::new(
            "y",
            Tensor::from_values(vec![2], &[1.0f32, f32::NAN]).unwrap(),
        )],
    );
    assert_eq!(
        response
            .encode(|_| TensorEncoding::Json)
            .unwrap_err()
            .code(),
        "non-finite-json"
    );
    let body = response.encode(|_| TensorEncoding::Binary).unwrap();
    let parsed = InferResponse::parse(body.body(), body.header_len(), &Limits::default()).unwrap();
    assert!(parsed.output("y").unwrap().to_values::<f32>().unwrap()[1].is_nan());
}

#[test]
fn request_encode_then_parse() {
    let inputs = vec![
        NamedTensor::new(
            "a",
            Tensor::from_values(vec![2, 2], &[1u16, 2, 3, 4]).unwrap(),
        ),
        NamedTensor::new("b", Tensor::from_values(vec![1], &[-0.0f32]).unwrap()),
    ];
    let mut parameters = Parameters::new();
    parameters.insert("priority", Parameter::Int(2));
    let request = InferRequest::new(inputs.clone())
        .with_id("x")
        .with_parameters(parameters)
        .with_output(RequestedOutput::new("y").with_encoding(TensorEncoding::Json))
        .with_output(RequestedOutput::new("z"))
        .with_binary_data_output(true);
    for binary_a in [false, true] {
        let body = request
            .encode(|name| {
                if name == "a" && binary_a {
                    TensorEncoding::Binary
                } else {
                    TensorEncoding::Json
                }
            })
            .unwrap();
        assert_eq!(body.header_len().is_some(), binary_a);
        let parsed =
            InferRequest::parse(body.body(), body.header_len(), &Limits::default()).unwrap();
        assert_eq!(parsed, request);
        assert_eq!(parsed.output_encoding("y"), TensorEncoding::Json);
        assert_eq!(parsed.output_encoding("z"), TensorEncoding::Binary);
    }
    let duplicate = InferRequest::new(vec![inputs[0].clone(), inputs[0].clone()]);
    assert_eq!(
        duplicate
            .encode(|_| TensorEncoding::Json)
            .unwrap_err()
            .code(),
        "duplicate-input"
    );
}

#[test]
fn metadata_objects_match_the_protocol() {
    let metadata = ModelMetadata::new(
        "m",
        "onnx_onnxv1",
        vec![TensorMetadata::new(
            "x",
            DataType::Fp32,
            vec![Dimension::Dynamic, Dimension::Fixed(3)],
        )],
        vec![],
    );
    let value = serde_json::to_value(&metadata).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"name":"m","platform":"onnx_onnxv1",
            "inputs":[{"name":"x","datatype":"FP32","shape":[-1,3]}],"outputs":[]})
    );
    let back: ModelMetadata = serde_json::from_value(value).unwrap();
    assert_eq!(back, metadata);
    assert!(serde_json::from_str::<Dimension>("-2").is_err());
    assert_eq!(
        serde_json::to_value(ServerMetadata::new(
            "cloak",
            "0.1.0",
            vec![BINARY_TENSOR_DATA_EXTENSION.into()]
        ))
        .unwrap(),
        serde_json::json!({"name":"cloak","version":"0.1.0","extensions":["binary_tensor_data"]})
    );
    assert_eq!(
        serde_json::to_value(ModelReady::new("m", true)).unwrap(),
        serde_json::json!({"name":"m","ready":true})
    );
    let error = KserveError::MissingData { name: "x".into() };
    assert_eq!(
        serde_json::to_value(ErrorBody::from(&error)).unwrap(),
        serde_json::json!({"error": error.to_string()})
    );
}

fn dtype_strategy() -> impl Strategy<Value = DataType> {
    prop::sample::select(DataType::ALL.to_vec())
}

/// A random valid tensor of `dtype`: random bytes fixed up where the type constrains them.
fn tensor_strategy() -> impl Strategy<Value = Tensor> {
    (dtype_strategy(), prop::collection::vec(0usize..4, 0..4)).prop_flat_map(|(dtype, shape)| {
        let count: usize = shape.iter().product();
        match dtype.element_size() {
            Some(size) => prop::collection::vec(any::<u8>(), count * size)
                .prop_map(move |mut bytes| {
                    if dtype == DataType::Bool {
                        bytes.iter_mut().for_each(|b| *b &= 1);
                    }
                    Tensor::new(dtype, shape.clone(), bytes).unwrap()
                })
                .boxed(),
            None => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), count)
                .prop_map(move |strings| {
                    Tensor::from_byte_strings(shape.clone(), &strings).unwrap()
                })
                .boxed(),
        }
    })
}

proptest! {
    #[test]
    fn any_tensor_round_trips_binary(tensors in prop::collection::vec(tensor_strategy(), 0..4)) {
        let outputs: Vec<NamedTensor> = tensors
            .into_iter()
            .enumerate()
            .map(|(i, tensor)| NamedTensor::new(format!("t{i}"), tensor))
            .collect();
        let response = InferResponse::new("m", outputs.clone());
        let body = response.encode(|_| TensorEncoding::Binary).unwrap();
        let parsed = InferResponse::parse(body.body(), body.header_len(), &Limits::default()).unwrap();
        prop_assert_eq!(parsed.into_outputs(), outputs.clone());
        // As JSON, every tensor JSON can carry comes back bit-exact (floats print shortest
        // round-trip); the rest is refused with a typed error.
        match response.encode(|_| TensorEncoding::Json) {
            Ok(body) => {
                let parsed = InferResponse::parse(body.body(), body.header_len(), &Limits::default()).unwrap();
                prop_assert_eq!(parsed.into_outputs(), outputs);
            }
            Err(err) => prop_assert!(matches!(err.code(), "non-finite-json" | "non-utf8-json")),
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), split in any::<Option<u8>>()) {
        let header_len = split.map(usize::from);
        let _ = InferRequest::parse(&body, header_len, &Limits::default());
        let _ = InferResponse::parse(&body, header_len, &Limits::default());
    }
}
