//! Helpers shared by the test suites of the workspace.

use burn::tensor::{Device, DeviceKind, DeviceType};

/// The wgpu device for tests, or `None` (after printing `SKIPPED`) on a machine without any
/// wgpu adapter. With `PLASTIC_REQUIRE_WGPU=1` (CI) a missing adapter is a failure instead, so
/// the wgpu tests never pass silently.
pub fn wgpu_test_device() -> Option<Device> {
    let required = std::env::var("PLASTIC_REQUIRE_WGPU").is_ok_and(|v| v == "1");
    if Device::enumerate(DeviceType::Wgpu).is_empty() {
        assert!(!required, "PLASTIC_REQUIRE_WGPU=1 but no wgpu adapter was found (install mesa-vulkan-drivers)");
        eprintln!("SKIPPED: no wgpu adapter on this machine (set PLASTIC_REQUIRE_WGPU=1 to make this a failure)");
        return None;
    }
    Some(Device::wgpu(DeviceKind::DefaultDevice))
}
