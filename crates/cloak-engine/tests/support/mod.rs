//! Builds small ONNX models in memory (tract's protobuf types, encoded with prost), so the
//! engine's tests need no Python and no files.

#![allow(dead_code, unreachable_pub, unused_imports)]

use prost::Message;
use tract_onnx::pb::tensor_proto::DataType as OnnxType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::type_proto;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

pub use tract_onnx::pb::tensor_proto::DataType as Elem;

/// A dimension: a fixed size or a named dynamic one.
pub enum D {
    Fixed(i64),
    Named(&'static str),
}

pub fn value(name: &str, elem: OnnxType, dims: &[D]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                D::Fixed(n) => dimension::Value::DimValue(*n),
                D::Named(s) => dimension::Value::DimParam((*s).to_owned()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: outputs.iter().map(|s| (*s).to_owned()).collect(),
        name: format!("{op}_{}", outputs.first().copied().unwrap_or("")),
        op_type: op.to_owned(),
        ..Default::default()
    }
}

pub fn with_attribute(mut node: NodeProto, attribute: AttributeProto) -> NodeProto {
    node.attribute.push(attribute);
    node
}

/// An FP32 initializer (a constant: the model's weights) named `name`.
pub fn weights(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type: OnnxType::Float as i32,
        float_data: values.to_vec(),
        ..Default::default()
    }
}

/// An ONNX model (IR 8, opset 17) of `nodes` from `inputs` to `outputs`, as bytes.
pub fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> Vec<u8> {
    model_with_weights(nodes, inputs, outputs, Vec::new())
}

/// [`model`] with constant initializers.
pub fn model_with_weights(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    initializer: Vec<TensorProto>,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "cloak-engine tests".to_owned(),
        graph: Some(GraphProto {
            node: nodes,
            name: "test".to_owned(),
            input: inputs,
            output: outputs,
            initializer,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// `onnx` with `key = value` in its metadata (`metadata_props`).
pub fn with_metadata(onnx: &[u8], key: &str, value: &str) -> Vec<u8> {
    let mut proto = ModelProto::decode(onnx).unwrap();
    proto
        .metadata_props
        .push(tract_onnx::pb::StringStringEntryProto {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    proto.encode_to_vec()
}

/// ONNX Runtime from the test library, with `threads` threads per request; `None` (skipped out
/// loud) without the library.
pub fn onnxruntime(threads: usize) -> Option<cloak_engine::Engine> {
    let library = cloak_test_support::deps::onnxruntime_library()?;
    let engine = cloak_engine::Engine::onnxruntime(&library)
        .unwrap_or_else(|e| panic!("{}: {e}", library.display()));
    Some(engine.with_threads(std::num::NonZeroUsize::new(threads).unwrap()))
}

/// Runs each named test (a `fn(&Engine)`) against every backend: tract and ONNX Runtime, each
/// with one thread per request and with two.
#[macro_export]
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod tract {
            $(#[test]
            fn $test() {
                super::$test(&cloak_engine::Engine::tract());
            })*
        }
        mod tract_2_threads {
            $(#[test]
            fn $test() {
                let threads = std::num::NonZeroUsize::new(2).unwrap();
                super::$test(&cloak_engine::Engine::tract().with_threads(threads));
            })*
        }
        mod onnxruntime {
            $(#[test]
            fn $test() {
                if let Some(engine) = super::support::onnxruntime(1) {
                    super::$test(&engine);
                }
            })*
        }
        mod onnxruntime_2_threads {
            $(#[test]
            fn $test() {
                if let Some(engine) = super::support::onnxruntime(2) {
                    super::$test(&engine);
                }
            })*
        }
    };
}
