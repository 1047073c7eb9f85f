//! The one place the engine calls into a native library itself: ONNX Runtime's version string,
//! which the `ort` crate checks while loading but does not expose. Everything else goes through
//! `ort`'s safe API.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};
use std::path::Path;

/// The entry point every ONNX Runtime 1.x exports (`onnxruntime_c_api.h`).
type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;

/// The version string (`1.32.0`) of the ONNX Runtime library at `path`, which `ort` has
/// already loaded and checked.
pub(super) fn version(path: &Path) -> Result<String, String> {
    // SAFETY: opening a shared library runs its initializers. This is the library `ort` loaded
    // from the same path moments ago, so the loader returns the handle it already has (with a
    // reference count) and runs nothing new.
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release (the C API's
    // only stable entry point); `ort` looked the same symbol up with the same type.
    let get_api_base = unsafe { library.get::<GetApiBase>(b"OrtGetApiBase") }
        .map_err(|_| "it does not export OrtGetApiBase".to_owned())?;
    // SAFETY: the function takes nothing and returns a pointer to a static table.
    let base = unsafe { get_api_base() };
    if base.is_null() {
        return Err("OrtGetApiBase returned nothing".to_owned());
    }
    // SAFETY: `base` is non-null and points to the library's static `OrtApiBase`, which lives
    // as long as the library stays loaded (`library` holds it); `GetVersionString` takes
    // nothing and returns a static NUL-terminated string.
    let text: *const c_char = unsafe { ((*base).GetVersionString)() };
    if text.is_null() {
        return Err("GetVersionString returned nothing".to_owned());
    }
    // SAFETY: `text` is non-null, NUL-terminated and static (see above).
    let version = unsafe { CStr::from_ptr(text) };
    version
        .to_str()
        .map(str::to_owned)
        .map_err(|_| "its version string is not UTF-8".to_owned())
}
