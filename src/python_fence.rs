//! When the worker may ask the interpreter for a step. Py_AddPendingCall dereferences the main
//! interpreter, which does not exist before Py_Initialize nor after Py_FinalizeEx has deleted
//! it; the flag Py_IsFinalizing is set too late to say so in time. So the first step registers an
//! `atexit` function (run by Py_FinalizeEx before it deletes anything) that closes this fence
//! and waits for a call already past it. Until that registration, the worker makes one call only.
use crate::python_api::sym;
use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};

const UNREGISTERED: u8 = 0;
/// The one call allowed before the registration has been made.
const FIRST_MADE: u8 = 1;
const OPEN: u8 = 2;
const CLOSED: u8 = 3;
static FENCE: AtomicU8 = AtomicU8::new(UNREGISTERED);
static IN_CALL: AtomicUsize = AtomicUsize::new(0);

/// Runs `call` if the interpreter is sure to outlive it.
pub fn pass(call: impl FnOnce()) {
    IN_CALL.fetch_add(1, SeqCst);
    let state = FENCE.load(SeqCst);
    let go = state == OPEN || (state == UNREGISTERED && FENCE.compare_exchange(UNREGISTERED, FIRST_MADE, SeqCst, SeqCst).is_ok());
    if go {
        call();
    }
    IN_CALL.fetch_sub(1, SeqCst);
}

/// A call the parent was making at the fork is not being made in the child.
pub fn after_fork_in_child() {
    IN_CALL.store(0, SeqCst);
}

/// `PyMethodDef`.
#[repr(C)]
struct MethodDef {
    name: *const c_char,
    meth: unsafe extern "C" fn(*mut c_void, *mut c_void) -> *mut c_void,
    flags: c_int,
    doc: *const c_char,
}

// SAFETY: read-only after construction; CPython only reads it.
unsafe impl Sync for MethodDef {}

const METH_NOARGS: c_int = 0x0004;
static CLOSE: MethodDef = MethodDef { name: c"memtrim_close_fence".as_ptr(), meth: close, flags: METH_NOARGS, doc: core::ptr::null() };

/// Registers `close` with the interpreter's `atexit` module. Called in a step: the interpreter's
/// main thread, its lock held, not finalising.
///
/// # Safety
/// As said above.
pub unsafe fn register() {
    if FENCE.load(SeqCst) >= OPEN {
        return;
    }
    if register_with_atexit().is_some() {
        FENCE.store(OPEN, SeqCst);
    } else if let Some(clear) = sym::<unsafe extern "C" fn()>(c"PyErr_Clear") {
        clear();
    }
}

unsafe fn register_with_atexit() -> Option<()> {
    type Obj = *mut c_void;
    let import: unsafe extern "C" fn(*const c_char) -> Obj = sym(c"PyImport_ImportModule")?;
    let loaded: unsafe extern "C" fn(Obj) -> Obj = sym(c"PyImport_GetModule")?;
    let text: unsafe extern "C" fn(*const c_char) -> Obj = sym(c"PyUnicode_FromString")?;
    let attr: unsafe extern "C" fn(Obj, *const c_char) -> Obj = sym(c"PyObject_GetAttrString")?;
    let new_function: unsafe extern "C" fn(*const MethodDef, Obj, Obj) -> Obj = sym(c"PyCFunction_NewEx")?;
    let call: unsafe extern "C" fn(Obj, ...) -> Obj = sym(c"PyObject_CallFunctionObjArgs")?;
    let decref: unsafe extern "C" fn(Obj) = sym(c"Py_DecRef")?;
    let owned = |o: Obj| (!o.is_null()).then_some(o);
    // the module as loaded (site loads it); an import runs importlib's code, done only if not
    let name = owned(text(c"atexit".as_ptr()))?;
    let found = owned(loaded(name));
    decref(name);
    let atexit = match found {
        Some(m) => m,
        None => owned(import(c"atexit".as_ptr()))?,
    };
    let reg = owned(attr(atexit, c"register".as_ptr()));
    decref(atexit);
    let reg = reg?;
    let function = owned(new_function(&CLOSE, core::ptr::null_mut(), core::ptr::null_mut()));
    let result = function.and_then(|f| owned(call(reg, f, core::ptr::null_mut::<c_void>())));
    function.map(|f| decref(f));
    decref(reg);
    decref(result?);
    Some(())
}

/// The `atexit` function: no step is asked for from now on.
unsafe extern "C" fn close(_: *mut c_void, _: *mut c_void) -> *mut c_void {
    FENCE.store(CLOSED, SeqCst);
    while IN_CALL.load(SeqCst) != 0 {
        core::hint::spin_loop();
    }
    let Some(none) = sym::<*mut c_void>(c"_Py_NoneStruct") else { return core::ptr::null_mut() };
    if let Some(incref) = sym::<unsafe extern "C" fn(*mut c_void)>(c"Py_IncRef") {
        incref(none);
    }
    none
}

