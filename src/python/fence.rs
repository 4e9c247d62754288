//! When the worker may ask the interpreter for a step. Py_AddPendingCall dereferences the main
//! interpreter, which does not exist before Py_Initialize nor after Py_FinalizeEx has deleted
//! it; the flag Py_IsFinalizing is set only after the pending calls are drained. So a step
//! registers an exit function (run by Py_FinalizeEx before it deletes anything) that closes this
//! fence and waits for a call already past it. A step runs no Python code to do so (it may come
//! at any bytecode boundary, inside the host's import hook or under its locks): CPython 3.12+
//! take a C function (`_Py_AtExit`, `PyUnstable_AtExit`); before that, `atexit.register` is
//! called only if the `atexit` module is already loaded and `register` is still its C function.
//! Until an exit function is registered, the worker asks only while the interpreter is not
//! finalising, which leaves the few microseconds between that check and its call.
use crate::python::api::sym;
use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};

const UNREGISTERED: u8 = 0;
const OPEN: u8 = 1;
const CLOSED: u8 = 2;
static FENCE: AtomicU8 = AtomicU8::new(UNREGISTERED);
static IN_CALL: AtomicUsize = AtomicUsize::new(0);

/// Runs `call` if the interpreter is sure to outlive it (`finalizing` tells, without the fence).
pub fn pass(finalizing: impl FnOnce() -> bool, call: impl FnOnce()) {
    IN_CALL.fetch_add(1, SeqCst);
    let go = match FENCE.load(SeqCst) {
        OPEN => true,
        UNREGISTERED => !finalizing(),
        _ => false,
    };
    if go {
        call();
    }
    IN_CALL.fetch_sub(1, SeqCst);
}

/// A call the parent was making at the fork is not being made in the child.
pub fn after_fork_in_child() {
    IN_CALL.store(0, SeqCst);
}

type Obj = *mut c_void;

/// Registers `close` to run at the interpreter's exit. Called in a step: the interpreter's
/// main thread, its lock held, not finalising.
///
/// # Safety
/// The caller is the interpreter's main thread, holds its lock, and it is not finalising.
pub unsafe fn register() {
    if FENCE.load(SeqCst) != UNREGISTERED {
        return;
    }
    // SAFETY: the caller's contract is the helpers'; PyErr_Clear has this type and, under the
    // interpreter's lock, clears what a failed registration raised.
    unsafe {
        if with_c_api().or_else(|| with_atexit_module()).is_some() {
            FENCE.store(OPEN, SeqCst);
        } else if let Some(clear) = sym::<unsafe extern "C" fn()>(c"PyErr_Clear") {
            clear();
        }
    }
}

/// 3.12's `_Py_AtExit`, 3.13's `PyUnstable_AtExit`: a C function for the main interpreter.
///
/// # Safety
/// As [`register`].
unsafe fn with_c_api() -> Option<()> {
    type AtExit = unsafe extern "C" fn(Obj, unsafe extern "C" fn(*mut c_void), *mut c_void) -> c_int;
    // SAFETY: each symbol is cast to the signature CPython's headers give it, and called under
    // the interpreter's lock, which the caller holds.
    unsafe {
        let at_exit: AtExit = sym(c"PyUnstable_AtExit").or_else(|| sym(c"_Py_AtExit"))?;
        let main: unsafe extern "C" fn() -> Obj = sym(c"PyInterpreterState_Main")?;
        (at_exit(main(), close_c, core::ptr::null_mut()) == 0).then_some(())
    }
}

/// # Safety
/// None: the interpreter calls it at exit with its own argument, unused.
unsafe extern "C" fn close_c(_: *mut c_void) {
    close();
}

/// `PyMethodDef`.
#[repr(C)]
struct MethodDef {
    name: *const c_char,
    meth: unsafe extern "C" fn(Obj, Obj) -> Obj,
    flags: c_int,
    doc: *const c_char,
}

// SAFETY: read-only after construction; CPython only reads it.
unsafe impl Sync for MethodDef {}

const METH_NOARGS: c_int = 0x0004;
static CLOSE: MethodDef = MethodDef { name: c"memtrim_close_fence".as_ptr(), meth: close_py, flags: METH_NOARGS, doc: core::ptr::null() };

/// `atexit.register(close)`, if `atexit` is loaded and its `register` is the module's C
/// function (a replacement would be the host's Python code).
///
/// # Safety
/// As [`register`].
unsafe fn with_atexit_module() -> Option<()> {
    // SAFETY: each symbol is cast to the signature CPython's headers give it and called under
    // the interpreter's lock (the caller's contract); every object is checked for null before
    // use and each new reference dropped once; `reg` is a live object, whose second word is its
    // type.
    unsafe {
        let loaded: unsafe extern "C" fn(Obj) -> Obj = sym(c"PyImport_GetModule")?;
        let text: unsafe extern "C" fn(*const c_char) -> Obj = sym(c"PyUnicode_FromString")?;
        let attr: unsafe extern "C" fn(Obj, *const c_char) -> Obj = sym(c"PyObject_GetAttrString")?;
        let new_function: unsafe extern "C" fn(*const MethodDef, Obj, Obj) -> Obj = sym(c"PyCFunction_NewEx")?;
        let call: unsafe extern "C" fn(Obj, ...) -> Obj = sym(c"PyObject_CallFunctionObjArgs")?;
        let decref: unsafe extern "C" fn(Obj) = sym(c"Py_DecRef")?;
        let c_function_type: Obj = sym(c"PyCFunction_Type")?;
        let owned = |o: Obj| (!o.is_null()).then_some(o);
        let name = owned(text(c"atexit".as_ptr()))?;
        let module = owned(loaded(name));
        decref(name);
        let reg = owned(attr(module?, c"register".as_ptr()));
        decref(module?);
        let reg = reg?;
        // ob_type follows the 8-byte reference count in every default build
        let builtin = (reg as *const Obj).add(1).read() == c_function_type;
        let function = owned(new_function(&CLOSE, core::ptr::null_mut(), core::ptr::null_mut())).filter(|_| builtin);
        let result = function.and_then(|f| owned(call(reg, f, core::ptr::null_mut::<c_void>())));
        if let Some(f) = function {
            decref(f);
        }
        decref(reg);
        decref(result?);
        Some(())
    }
}

/// # Safety
/// None: the interpreter calls it, with its lock held, as a METH_NOARGS function.
unsafe extern "C" fn close_py(_: Obj, _: Obj) -> Obj {
    close();
    // SAFETY: _Py_NoneStruct's address is the None object; Py_IncRef has this type, and the
    // interpreter's lock is held.
    unsafe {
        let Some(none) = sym::<Obj>(c"_Py_NoneStruct") else { return core::ptr::null_mut() };
        if let Some(incref) = sym::<unsafe extern "C" fn(Obj)>(c"Py_IncRef") {
            incref(none);
        }
        none
    }
}

/// No step is asked for from now on.
fn close() {
    FENCE.store(CLOSED, SeqCst);
    while IN_CALL.load(SeqCst) != 0 {
        core::hint::spin_loop();
    }
}
