use super::*;

#[test]
fn names_round_trip_and_are_case_sensitive() {
    for dtype in DataType::ALL {
        assert_eq!(DataType::from_name(dtype.name()), Some(dtype));
    }
    assert_eq!(DataType::from_name("fp32"), None);
    assert_eq!(DataType::from_name("BF16"), None);
}

#[test]
fn values_round_trip_little_endian() {
    let t = Tensor::from_values(vec![2, 2], &[1.0f32, -2.5, 3.25, 0.0]).unwrap();
    assert_eq!(t.dtype(), DataType::Fp32);
    assert_eq!(&t.data()[..4], &1.0f32.to_le_bytes());
    assert_eq!(t.to_values::<f32>().unwrap(), [1.0, -2.5, 3.25, 0.0]);
    let t = Tensor::from_values(vec![3], &[i64::MIN, 0, i64::MAX]).unwrap();
    assert_eq!(t.to_values::<i64>().unwrap(), [i64::MIN, 0, i64::MAX]);
    let t = Tensor::from_values(vec![2], &[true, false]).unwrap();
    assert_eq!(t.data(), [1, 0]);
    assert_eq!(t.to_values::<bool>().unwrap(), [true, false]);
}

#[test]
fn lengths_must_match_the_shape() {
    let err = Tensor::new(DataType::Fp32, vec![2, 3], vec![0; 20]).unwrap_err();
    assert_eq!(
        err,
        TensorError::LengthMismatch {
            dtype: DataType::Fp32,
            expected: 24,
            actual: 20
        }
    );
    assert_eq!(
        Tensor::new(DataType::Uint8, vec![usize::MAX, 2], vec![]).unwrap_err(),
        TensorError::TooManyElements
    );
    assert_eq!(
        Tensor::new(DataType::Fp64, vec![usize::MAX / 4], vec![]).unwrap_err(),
        TensorError::TooManyElements
    );
    assert_eq!(
        Tensor::new(DataType::Uint8, vec![1; 17], vec![0]).unwrap_err(),
        TensorError::RankTooHigh(17)
    );
    // A zero dimension is an empty tensor; a scalar has one element.
    assert_eq!(
        Tensor::new(DataType::Fp32, vec![0, 5], vec![])
            .unwrap()
            .element_count(),
        0
    );
    assert_eq!(
        Tensor::new(DataType::Int32, vec![], vec![0; 4])
            .unwrap()
            .element_count(),
        1
    );
}

#[test]
fn bool_elements_are_zero_or_one() {
    assert_eq!(
        Tensor::new(DataType::Bool, vec![2], vec![1, 2]).unwrap_err(),
        TensorError::InvalidBool
    );
}

#[test]
fn bytes_elements_are_length_prefixed() {
    let t = Tensor::from_byte_strings(vec![2], &["ab", "cde"]).unwrap();
    assert_eq!(t.data(), b"\x02\0\0\0ab\x03\0\0\0cde");
    let elements: Vec<&[u8]> = t.byte_strings().unwrap().collect();
    assert_eq!(elements, [&b"ab"[..], b"cde"]);
    assert!(
        Tensor::from_values(vec![1], &[1u8])
            .unwrap()
            .byte_strings()
            .is_none()
    );

    let bad = |data: &[u8], shape: Vec<usize>| {
        Tensor::new(DataType::Bytes, shape, data.to_vec()).unwrap_err()
    };
    assert_eq!(bad(b"\x05\0\0\0ab", vec![1]), TensorError::MalformedBytes);
    assert_eq!(bad(b"\x02\0\0", vec![1]), TensorError::MalformedBytes);
    assert_eq!(
        bad(b"\x02\0\0\0ab", vec![2]),
        TensorError::ElementCountMismatch {
            expected: 2,
            actual: 1
        }
    );
    // Empty elements are elements.
    let t = Tensor::new(DataType::Bytes, vec![2], vec![0; 8]).unwrap();
    assert_eq!(t.byte_strings().unwrap().count(), 2);
}

#[test]
fn values_of_another_type_are_refused() {
    let t = Tensor::from_values(vec![1], &[1i32]).unwrap();
    assert_eq!(
        t.to_values::<f32>().unwrap_err(),
        TensorError::TypeMismatch {
            expected: DataType::Fp32,
            actual: DataType::Int32
        }
    );
}

#[test]
fn debug_never_shows_the_data() {
    let t = Tensor::from_byte_strings(vec![1], &["patient record 4711"]).unwrap();
    let shown = format!("{t:?}");
    assert!(
        !shown.contains("4711") && !shown.contains("patient"),
        "{shown}"
    );
    assert!(shown.contains("Bytes") && shown.contains("[1]"), "{shown}");
}
