//! Unpacking a verified `.tar.gz` or `.zip` into a directory, refusing anything that
//! could put a file outside it: `..` components, absolute paths, hard links, symbolic
//! links that are absolute or climb with `..`, entries written through a link, and
//! device files. The caller unpacks into a fresh staging directory, so a refusal
//! half-way leaves nothing anywhere that matters (the staging directory is removed).

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use super::ArtifactError;

/// Unpacks `archive`, a `.tar.gz` or a `.zip` told apart by their first bytes (a
/// download's file name says nothing), into `into`, which must exist and be empty.
/// Returns the number of entries.
pub fn unpack(archive: &Path, into: &Path) -> Result<usize, ArtifactError> {
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(archive)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(ArtifactError::io(format!("opening {}", archive.display())))?;
    match &magic[..n] {
        [0x1f, 0x8b, ..] => unpack_tar_gz(archive, into),
        [b'P', b'K', 3, 4] | [b'P', b'K', 5, 6] => unpack_zip(archive, into),
        _ => Err(ArtifactError::Archive("it is neither a .tar.gz nor a .zip".into())),
    }
}

/// Unix file types in a zip entry's mode.
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
/// A link's target is a path, not a file: anything longer is not one.
const MAX_LINK_TARGET: u64 = 4096;

/// Unpacks `archive` (zip) into `into`, which must exist and be empty, under the same
/// rules as [`unpack_tar_gz`]. Returns the number of entries.
pub fn unpack_zip(archive: &Path, into: &Path) -> Result<usize, ArtifactError> {
    let file = std::fs::File::open(archive).map_err(ArtifactError::io(format!("opening {}", archive.display())))?;
    let mut zip =
        zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| ArtifactError::Archive(e.to_string()))?;
    let mut count = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| ArtifactError::Archive(e.to_string()))?;
        let shown = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let unsafe_entry = |why: &str| ArtifactError::UnsafeEntry { entry: shown.clone(), why: why.to_string() };
        // Zip names use `/`; a `\\` is a Windows separator, never part of a name here.
        let name = shown.replace('\\', "/");
        let rel = safe_relative(Path::new(&name)).map_err(&unsafe_entry)?;
        let mode = entry.unix_mode();
        let kind = match mode.map(|m| m & S_IFMT) {
            Some(S_IFLNK) => S_IFLNK,
            _ if entry.is_dir() => S_IFDIR,
            None | Some(0) | Some(S_IFREG) => S_IFREG,
            Some(S_IFDIR) => S_IFDIR,
            Some(_) => return Err(unsafe_entry("is not a file, directory or relative link")),
        };
        let Some(rel) = rel else { continue };
        no_link_on_the_way(into, &rel).map_err(&unsafe_entry)?;
        let dest = into.join(&rel);
        let parent_of = |dest: &Path| -> Result<(), ArtifactError> {
            match dest.parent() {
                Some(parent) => {
                    std::fs::create_dir_all(parent).map_err(ArtifactError::io(format!("creating {}", parent.display())))
                }
                None => Ok(()),
            }
        };
        let failed = |e: std::io::Error| ArtifactError::Archive(format!("{shown}: {e}"));
        match kind {
            S_IFDIR => std::fs::create_dir_all(&dest).map_err(failed)?,
            S_IFLNK => {
                if entry.size() > MAX_LINK_TARGET {
                    return Err(unsafe_entry("is a link with a target longer than a path"));
                }
                let mut target = String::new();
                entry.read_to_string(&mut target).map_err(|e| ArtifactError::Archive(format!("{shown}: {e}")))?;
                check_link_target(Path::new(&target)).map_err(&unsafe_entry)?;
                parent_of(&dest)?;
                #[cfg(unix)]
                std::os::unix::fs::symlink(&target, &dest).map_err(failed)?;
            }
            _ => {
                parent_of(&dest)?;
                let mut options = std::fs::OpenOptions::new();
                // Never over something unpacked before (a second entry of one name).
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(mode.map(|m| m & 0o777).filter(|m| *m != 0).unwrap_or(0o644));
                }
                let mut out = options.open(&dest).map_err(failed)?;
                std::io::copy(&mut entry, &mut out).map_err(failed)?;
            }
        }
        count += 1;
    }
    Ok(count)
}

/// Unpacks `archive` (gzip-compressed tar) into `into`, which must exist and be empty.
/// Returns the number of entries.
pub fn unpack_tar_gz(archive: &Path, into: &Path) -> Result<usize, ArtifactError> {
    let file = std::fs::File::open(archive).map_err(ArtifactError::io(format!("opening {}", archive.display())))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut tar = tar::Archive::new(gz);
    tar.set_preserve_permissions(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(false);
    let mut count = 0;
    let entries = tar.entries().map_err(|e| ArtifactError::Archive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ArtifactError::Archive(e.to_string()))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_entry = |why: &str| ArtifactError::UnsafeEntry { entry: shown.clone(), why: why.to_string() };
        let rel = safe_relative(Path::new(&*String::from_utf8_lossy(&raw))).map_err(&unsafe_entry)?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| ArtifactError::Archive(e.to_string()))?
                    .ok_or_else(|| unsafe_entry("is a link without a target"))?;
                check_link_target(&target).map_err(&unsafe_entry)?;
            }
            tar::EntryType::Link => return Err(unsafe_entry("is a hard link")),
            // PAX and GNU long-name headers are consumed by the tar crate itself.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            _ => return Err(unsafe_entry("is not a file, directory or relative link")),
        }
        let Some(rel) = rel else { continue };
        no_link_on_the_way(into, &rel).map_err(&unsafe_entry)?;
        let dest = into.join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(ArtifactError::io(format!("creating {}", parent.display())))?;
        }
        entry.unpack(&dest).map_err(|e| ArtifactError::Archive(format!("{shown}: {e}")))?;
        count += 1;
    }
    Ok(count)
}

/// The entry's path as a plain relative path (`None` for the root itself), or why not.
fn safe_relative(path: &Path) -> Result<Option<PathBuf>, &'static str> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("climbs out with `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(if out.as_os_str().is_empty() { None } else { Some(out) })
}

/// A link may point only down from where it is: relative, no `..`. Links to links
/// then stay inside too, whatever their order in the archive.
fn check_link_target(target: &Path) -> Result<(), &'static str> {
    for c in target.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("is a link that climbs out with `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("is a link to an absolute path"),
        }
    }
    Ok(())
}

/// No directory between `root` and the entry is a link unpacked earlier: writing
/// through one would land wherever it points.
fn no_link_on_the_way(root: &Path, rel: &Path) -> Result<(), &'static str> {
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in parts.iter().take(parts.len().saturating_sub(1)) {
        at.push(c);
        if let Ok(meta) = std::fs::symlink_metadata(&at) {
            if meta.file_type().is_symlink() {
                return Err("would be written through a link");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(dir: &Path, build: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<std::fs::File>>)) -> PathBuf {
        let path = dir.join("a.tar.gz");
        let file = std::fs::File::create(&path).unwrap();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
        build(&mut b);
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    fn file_header(len: usize) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_size(len as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h
    }

    #[test]
    fn plain_files_and_inner_links_unpack() {
        let tmp = tempfile::tempdir().unwrap();
        let a = archive(tmp.path(), |b| {
            b.append_data(&mut file_header(2), "bin/x.sh", &b"hi"[..]).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "run", "bin/x.sh").unwrap();
        });
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        assert_eq!(unpack_tar_gz(&a, &out).unwrap(), 2);
        assert_eq!(std::fs::read(out.join("run")).unwrap(), b"hi");
    }

    fn zip_archive(dir: &Path, build: impl FnOnce(&mut zip::ZipWriter<std::fs::File>)) -> PathBuf {
        let path = dir.join("a.zip");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        build(&mut z);
        z.finish().unwrap();
        path
    }

    #[test]
    fn a_zip_unpacks_with_modes_and_inner_links_and_refuses_what_escapes() {
        use std::io::Write;
        use zip::write::SimpleFileOptions;
        let tmp = tempfile::tempdir().unwrap();
        let a = zip_archive(tmp.path(), |z| {
            z.add_directory("bin/", SimpleFileOptions::default()).unwrap();
            z.start_file("bin/x.sh", SimpleFileOptions::default().unix_permissions(0o755)).unwrap();
            z.write_all(b"hi").unwrap();
            z.add_symlink("run", "bin/x.sh", SimpleFileOptions::default()).unwrap();
        });
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        assert_eq!(unpack(&a, &out).unwrap(), 3);
        assert_eq!(std::fs::read(out.join("run")).unwrap(), b"hi");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(out.join("bin/x.sh")).unwrap().permissions().mode() & 0o777, 0o755);

        let out = tmp.path().join("out2");
        std::fs::create_dir(&out).unwrap();
        let a = zip_archive(tmp.path(), |z| {
            z.add_symlink("etc", "../../etc", SimpleFileOptions::default()).unwrap();
        });
        let e = unpack(&a, &out).unwrap_err();
        assert_eq!(e.to_string(), "archive entry `etc` is a link that climbs out with `..`; the archive is refused");
        let a = zip_archive(tmp.path(), |z| {
            z.add_symlink("etc", "/etc", SimpleFileOptions::default()).unwrap();
        });
        let e = unpack(&a, &out).unwrap_err();
        assert_eq!(e.to_string(), "archive entry `etc` is a link to an absolute path; the archive is refused");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
        std::fs::write(tmp.path().join("junk"), b"not an archive").unwrap();
        let e = unpack(&tmp.path().join("junk"), &out).unwrap_err();
        assert_eq!(e.to_string(), "the archive cannot be unpacked: it is neither a .tar.gz nor a .zip");
    }

    #[test]
    fn escaping_entries_are_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        // The tar crate's builder refuses `..` itself, so the name is written raw.
        let a = archive(tmp.path(), |b| {
            let mut h = file_header(4);
            h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
            h.set_cksum();
            b.append(&h, &b"evil"[..]).unwrap();
        });
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let e = unpack_tar_gz(&a, &out).unwrap_err();
        assert_eq!(e.to_string(), "archive entry `../escape` climbs out with `..`; the archive is refused");
        assert!(!tmp.path().join("escape").exists());

        let a = archive(tmp.path(), |b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "etc", "/etc").unwrap();
        });
        let e = unpack_tar_gz(&a, &out).unwrap_err();
        assert_eq!(e.to_string(), "archive entry `etc` is a link to an absolute path; the archive is refused");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    }
}
