//! What the agent and `touchgate init` say about seeing security keys on Linux:
//! the one fix for a key the user may not open, and which hidraw devices are
//! FIDO keys (by their report descriptor, readable without opening the device).
//!
//! Invariant: reading sysfs never opens a device, so listing keys never
//! disturbs one (or needs a touch).

use std::path::{Path, PathBuf};

/// The fix when a key is plugged in but the user may not open it.
pub const UDEV_RULE_FIX: &str =
    "add the udev rule from the README (KERNEL==\"hidraw*\", TAG+=\"uaccess\") and plug it in again";

/// The FIDO HID usage page (0xF1D0) as a report descriptor item.
const FIDO_USAGE_PAGE: [u8; 3] = [0x06, 0xd0, 0xf1];

/// `/dev/hidrawN` of every HID device whose report descriptor declares the FIDO usage page.
pub fn fido_devices() -> Vec<PathBuf> {
    fido_devices_in(Path::new("/sys/class/hidraw"))
}

fn fido_devices_in(class: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(class) else {
        return vec![];
    };
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("device/report_descriptor"))
                .is_ok_and(|d| d.windows(3).any(|w| w == FIDO_USAGE_PAGE))
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_devices_with_the_fido_usage_page_are_keys() {
        let dir = tempfile::tempdir().unwrap();
        for (name, desc) in [
            ("hidraw0", &[0x05u8, 0x01, 0x09, 0x06][..]), // a keyboard
            ("hidraw3", &[0x06, 0xd0, 0xf1, 0x09, 0x01]), // a FIDO key
            ("hidraw5", &[]),
        ] {
            let d = dir.path().join(name).join("device");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("report_descriptor"), desc).unwrap();
        }
        assert_eq!(fido_devices_in(dir.path()), [PathBuf::from("/dev/hidraw3")]);
        assert!(fido_devices_in(&dir.path().join("absent")).is_empty());
    }
}
