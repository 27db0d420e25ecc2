//! Which symlinks a guest may create in a writable preopen.
//!
//! wasmtime-wasi refuses a symlink whose target is absolute, but writes a
//! relative target as given: a guest granted `data/` could leave
//! `data/key -> ../../home/me/.ssh/id_ed25519` behind. The sandbox never
//! follows it out, but the operator's own programs would. So Tern refuses
//! every target that climbs: it must be relative and have no `..`, which
//! keeps it at or below the link's own directory wherever that is. (A rule
//! that let `..` climb as far as the preopen's root would not hold: moving
//! `sub/l -> ../x` up one level with a rename makes it point outside.)
//!
//! The check stands in front of wasmtime-wasi's own implementation, for
//! WASI preview 1 (`path_symlink`) and WASI 0.2 (`descriptor.symlink-at`)
//! alike, by shadowing its definition in the linker. A refused guest gets
//! `EPERM` / `not-permitted`, what wasmtime-wasi answers for an absolute
//! target.

use std::future::Future;
use std::path::{Component, Path};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use wasmtime::component::{Accessor, Resource};
use wasmtime::{Caller, Extern, Func, Instance, Linker, Memory, Module, Result, Store, bail};
use wasmtime::{StoreContextMut, component};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::filesystem::{
    Descriptor, WasiFilesystem, WasiFilesystemCtxView, WasiFilesystemView as _,
};
use wasmtime_wasi::p2::bindings::filesystem::types::{ErrorCode, HostDescriptor};
use wasmtime_wasi::p3::bindings::filesystem::types::{
    ErrorCode as P3ErrorCode, HostDescriptorWithStore as _,
};

/// Whether a guest may create a symlink to `target`: a relative path with
/// no `..`, naming something at or below the link's directory.
pub(crate) fn stays_below(target: &str) -> bool {
    let target = Path::new(target);
    !target.has_root()
        && target
            .components()
            .all(|part| matches!(part, Component::Normal(_) | Component::CurDir))
}

/// The interface under which wasmtime-wasi 48 links `symlink-at`; a guest
/// importing any 0.2.x version of it is given this one.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";
const SYMLINK_AT: &str = "[method]descriptor.symlink-at";

/// Puts the check in front of `descriptor.symlink-at` in a linker that
/// already has wasmtime-wasi's WASI 0.2 (`p2::add_to_linker_async`).
pub(crate) fn guard_component<T: WasiView + 'static>(
    linker: &mut component::Linker<T>,
) -> Result<()> {
    replace(linker, FILESYSTEM_TYPES, |types| {
        types.func_wrap_async(SYMLINK_AT, symlink_at::<T>)
    })
}

/// Defines `symlink-at` in `interface` with `define`, in place of
/// wasmtime-wasi's definition. Defining it without shadowing first must
/// fail: that shows wasmtime-wasi defined it under this name, so the new
/// definition replaces it rather than sitting beside it unused.
fn replace<T: 'static>(
    linker: &mut component::Linker<T>,
    interface: &str,
    define: impl Fn(&mut component::LinkerInstance<'_, T>) -> Result<()>,
) -> Result<()> {
    if define(&mut linker.instance(interface)?).is_ok() {
        bail!(
            "wasmtime-wasi no longer links `{interface}` `{SYMLINK_AT}`, so Tern cannot check symlinks"
        );
    }
    linker.allow_shadowing(true);
    let defined = linker
        .instance(interface)
        .and_then(|mut instance| define(&mut instance));
    linker.allow_shadowing(false);
    defined
}

/// The host function for `descriptor.symlink-at`.
#[allow(clippy::type_complexity)]
fn symlink_at<T: WasiView + 'static>(
    store: StoreContextMut<'_, T>,
    params: (Resource<Descriptor>, String, String),
) -> Box<dyn Future<Output = Result<(std::result::Result<(), ErrorCode>,)>> + Send + '_> {
    Box::new(checked_symlink_at(store, params))
}

/// `descriptor.symlink-at(old-path: string, new-path: string)`: the link
/// `new-path` pointing at `old-path`, checked, then made by wasmtime-wasi.
async fn checked_symlink_at<T: WasiView + 'static>(
    mut store: StoreContextMut<'_, T>,
    (dir, target, link): (Resource<Descriptor>, String, String),
) -> Result<(std::result::Result<(), ErrorCode>,)> {
    if !stays_below(&target) {
        return Ok((Err(ErrorCode::NotPermitted),));
    }
    let mut fs = store.data_mut().filesystem();
    let made = match HostDescriptor::symlink_at(&mut fs, dir, target, link).await {
        Ok(()) => Ok(()),
        // A trap stays a trap; an error code goes back to the guest.
        Err(error) => Err(error.downcast()?),
    };
    Ok((made,))
}

/// Where wasmtime-wasi 48 links WASI 0.3's `symlink-at`.
const P3_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.3.0";

/// Puts the check in front of WASI 0.3's `descriptor.symlink-at` in a
/// linker that already has wasmtime-wasi's WASI 0.3 (`p3::add_to_linker`).
pub(crate) fn guard_p3_component<T: WasiView + 'static>(
    linker: &mut component::Linker<T>,
) -> Result<()> {
    replace(linker, P3_FILESYSTEM_TYPES, |types| {
        types.func_wrap_concurrent(SYMLINK_AT, p3_symlink_at::<T>)
    })
}

/// The host function for WASI 0.3's `descriptor.symlink-at`.
#[allow(clippy::type_complexity)]
fn p3_symlink_at<T: WasiView + 'static>(
    guest: &Accessor<T>,
    (dir, target, link): (Resource<Descriptor>, String, String),
) -> Pin<Box<dyn Future<Output = Result<(std::result::Result<(), P3ErrorCode>,)>> + Send + '_>> {
    Box::pin(async move {
        if !stays_below(&target) {
            return Ok((Err(P3ErrorCode::NotPermitted),));
        }
        let fs = guest.with_getter::<WasiFilesystem>(filesystem_of::<T>);
        let made = match WasiFilesystem::symlink_at(&fs, dir, target, link).await {
            Ok(()) => Ok(()),
            // A trap stays a trap; an error code goes back to the guest.
            Err(error) => Err(error.downcast()?),
        };
        Ok((made,))
    })
}

fn filesystem_of<T: WasiView>(data: &mut T) -> WasiFilesystemCtxView<'_> {
    data.filesystem()
}

/// WASI preview 1's module and function.
const PREVIEW1: &str = "wasi_snapshot_preview1";
const PATH_SYMLINK: &str = "path_symlink";

/// `errno::perm`.
const ERRNO_PERM: i32 = 63;

/// Calls wasmtime-wasi's `path_symlink` from wasm, so that it finds the
/// guest's memory where it looks for it: exported as `memory` by the
/// instance calling it. (Called straight from the host, it would find none.)
const RELAY: &str = r#"(module
  (import "guest" "memory" (memory 0))
  (import "wasi" "path_symlink" (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
  (export "memory" (memory 0))
  (func (export "path_symlink") (param i32 i32 i32 i32 i32) (result i32)
    (call $path_symlink (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4))))"#;

/// Puts the check in front of wasmtime-wasi's `path_symlink` in a linker
/// that already has WASI preview 1 (`p1::add_to_linker_async`). The linker
/// must serve only `store`, and one guest instance in it.
pub(crate) fn guard_module<T: Send + 'static>(
    linker: &mut Linker<T>,
    store: &mut Store<T>,
) -> Result<()> {
    let Some(original) = linker.get(&mut *store, PREVIEW1, PATH_SYMLINK)?.into_func() else {
        bail!("wasmtime-wasi's `{PREVIEW1}::{PATH_SYMLINK}` is not a function");
    };
    // The relay instance, made on the first call: most guests never make a
    // symlink, and compiling the relay takes a millisecond.
    let relay: Arc<OnceLock<Func>> = Arc::default();
    linker.allow_shadowing(true);
    let defined = linker
        .func_wrap_async(
            PREVIEW1,
            PATH_SYMLINK,
            move |caller: Caller<'_, T>, args: (i32, i32, i32, i32, i32)| {
                Box::new(path_symlink(caller, args, original, relay.clone()))
            },
        )
        .map(|_| ());
    linker.allow_shadowing(false);
    defined
}

/// `path_symlink(old_path, old_path_len, fd, new_path, new_path_len)`: the
/// link `new_path` in `fd` pointing at `old_path`, checked, then made by
/// wasmtime-wasi's `original` through the relay.
async fn path_symlink<T: Send + 'static>(
    mut caller: Caller<'_, T>,
    args: (i32, i32, i32, i32, i32),
    original: Func,
    relay: Arc<OnceLock<Func>>,
) -> Result<i32> {
    // A shared memory could change between the check and its use; a guest
    // without a memory has no path to give.
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Ok(ERRNO_PERM);
    };
    let (target_ptr, target_len, ..) = args;
    match read_str(memory.data(&caller), target_ptr, target_len) {
        Some(target) if !stays_below(target) => return Ok(ERRNO_PERM),
        // Out of bounds or not UTF-8: wasmtime-wasi refuses it when it
        // reads the same bytes.
        _ => {}
    }
    let func = match relay.get() {
        Some(func) => *func,
        None => {
            let func = instantiate_relay(&mut caller, memory, original).await?;
            *relay.get_or_init(|| func)
        }
    };
    let relayed = func.typed::<(i32, i32, i32, i32, i32), i32>(&caller)?;
    relayed.call_async(&mut caller, args).await
}

/// The string at `ptr`, `len` bytes long, in `memory`.
fn read_str(memory: &[u8], ptr: i32, len: i32) -> Option<&str> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    std::str::from_utf8(memory.get(start..end)?).ok()
}

/// An instance of [`RELAY`] over the guest's `memory`, calling `original`;
/// returns its `path_symlink`.
async fn instantiate_relay<T: Send + 'static>(
    caller: &mut Caller<'_, T>,
    memory: Memory,
    original: Func,
) -> Result<Func> {
    let module = Module::new(caller.engine(), RELAY)?;
    let imports = [Extern::from(memory), Extern::from(original)];
    let instance = Instance::new_async(&mut *caller, &module, &imports).await?;
    match instance.get_func(&mut *caller, PATH_SYMLINK) {
        Some(func) => Ok(func),
        None => bail!("the symlink relay exports no `{PATH_SYMLINK}`"),
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::component::ResourceTable;
    use wasmtime_wasi::p1::WasiP1Ctx;
    use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView};

    use super::*;

    /// Only its type is used: the linker below never instantiates.
    #[allow(dead_code)]
    struct Host {
        ctx: WasiCtx,
        table: ResourceTable,
    }

    impl WasiView for Host {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.ctx,
                table: &mut self.table,
            }
        }
    }

    fn engine() -> wasmtime::Engine {
        crate::engine_for(&crate::Limits::default()).unwrap()
    }

    #[test]
    fn the_component_guard_replaces_wasmtime_wasis_symlink_at() {
        let engine = engine();
        let mut linker = component::Linker::<Host>::new(&engine);
        // Without wasmtime-wasi there is nothing to stand in front of.
        assert!(guard_component(&mut linker).is_err());
        let mut linker = component::Linker::<Host>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        guard_component(&mut linker).unwrap();
    }

    /// Makes symlinks in the preopen `/data` (fd 3) through preview 1.
    const SYMLINKER: &str = r#"(module
      (import "wasi_snapshot_preview1" "path_symlink"
        (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "../outside")
      (data (i32.const 16) "escape")
      (data (i32.const 32) "inside.txt")
      (data (i32.const 48) "ok")
      (func (export "escape") (result i32)
        (call $symlink (i32.const 0) (i32.const 10) (i32.const 3) (i32.const 16) (i32.const 6)))
      (func (export "inside") (result i32)
        (call $symlink (i32.const 32) (i32.const 10) (i32.const 3) (i32.const 48) (i32.const 2)))
      (func (export "out_of_bounds") (result i32)
        (call $symlink (i32.const 65530) (i32.const 10) (i32.const 3) (i32.const 48) (i32.const 2))))"#;

    #[test]
    fn the_module_guard_refuses_climbing_targets_and_relays_the_rest() {
        let engine = engine();
        let dir = tempfile::tempdir().unwrap();
        let mut wasi = WasiCtxBuilder::new();
        wasi.preopened_dir(dir.path(), "/data", FsPerms::ReadWrite)
            .unwrap();
        let mut store = Store::new(&engine, wasi.build_p1());
        let mut linker = Linker::<WasiP1Ctx>::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |cx| cx).unwrap();
        guard_module(&mut linker, &mut store).unwrap();
        let module = Module::new(&engine, SYMLINKER).unwrap();
        let (escape, inside, out_of_bounds) = crate::run::block_on(async {
            let instance = linker.instantiate_async(&mut store, &module).await?;
            let escape = instance.get_typed_func::<(), i32>(&mut store, "escape")?;
            let inside = instance.get_typed_func::<(), i32>(&mut store, "inside")?;
            let out_of_bounds = instance.get_typed_func::<(), i32>(&mut store, "out_of_bounds")?;
            Ok((
                escape.call_async(&mut store, ()).await?,
                inside.call_async(&mut store, ()).await?,
                out_of_bounds.call_async(&mut store, ()).await,
            ))
        })
        .unwrap();
        assert_eq!(escape, ERRNO_PERM);
        assert!(std::fs::symlink_metadata(dir.path().join("escape")).is_err());
        assert_eq!(inside, 0);
        assert_eq!(
            std::fs::read_link(dir.path().join("ok")).unwrap(),
            Path::new("inside.txt")
        );
        // wasmtime-wasi's own answer for a path it cannot read: a trap.
        assert!(out_of_bounds.is_err(), "{out_of_bounds:?}");
    }

    #[test]
    fn targets_may_not_climb() {
        for target in ["note.txt", "sub/note.txt", "./note.txt", ".", "a/./b", ""] {
            assert!(stays_below(target), "{target}");
        }
        for target in [
            "/etc/passwd",
            "/",
            "..",
            "../secret.txt",
            "sub/../../secret.txt",
            "sub/..",
            "a/b/../c",
        ] {
            assert!(!stays_below(target), "{target}");
        }
    }

    #[test]
    fn guest_strings_are_read_within_bounds() {
        let memory = b"..abc\xff";
        assert_eq!(read_str(memory, 2, 3), Some("abc"));
        assert_eq!(read_str(memory, 0, 0), Some(""));
        assert_eq!(read_str(memory, 4, 3), None);
        assert_eq!(read_str(memory, 5, 1), None);
        assert_eq!(read_str(memory, -1, 1), None);
        assert_eq!(read_str(memory, 1, -1), None);
    }
}
