package testrack

import (
	"context"
	"os"
	"path/filepath"
)

// DefaultPiModel is the device-tree model MakePi uses when given "".
const DefaultPiModel = "Raspberry Pi 4 Model B Rev 1.4"

// PiCmdline is the /boot/firmware/cmdline.txt MakePi writes: Raspberry Pi OS
// Bookworm's, without the cgroup flags k3s needs, as a fresh install has it.
const PiCmdline = "console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait\n"

// piOSRelease is /etc/os-release of 64-bit Raspberry Pi OS Bookworm. It is
// Debian's own: only the 32-bit image says ID=raspbian.
const piOSRelease = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
`

// piConfigTxt is Raspberry Pi OS Bookworm's stock /boot/firmware/config.txt.
const piConfigTxt = `# For more options and information see
# http://rptl.io/configtxt
# Some settings may impact device functionality. See link above for details

# Uncomment some or all of these to enable the optional hardware interfaces
#dtparam=i2c_arm=on
#dtparam=i2s=on
#dtparam=spi=on

# Enable audio (loads snd_bcm2835)
dtparam=audio=on

# Automatically load overlays for detected cameras
camera_auto_detect=1

# Automatically load overlays for detected DSI displays
display_auto_detect=1

# Automatically load initramfs files, if found
auto_initramfs=1

# Enable DRM VC4 V3D driver
dtoverlay=vc4-kms-v3d
max_framebuffers=2

# Don't have the firmware create an initial video= setting in cmdline.txt.
# Use the kernel's default instead.
disable_fw_kms_setup=1

# Run in 64-bit mode
arm_64bit=1

# Disable compensation for displays with overscan
disable_overscan=1

# Run as fast as firmware / board allows
arm_boost=1

[cm4]
# Enable host mode on the 2711 built-in XHCI USB controller.
# This line should be removed if the legacy DWC2 controller is required
# (e.g. for USB device mode) or if USB support is not required.
otg_mode=1

[all]
`

// piWrapperMark identifies the wrappers MakePi installs, so MakeX86 removes
// only those and never a binary a test (or rack) put in /usr/local/bin.
const piWrapperMark = "testrack-pi-wrapper"

// unameWrapper reports aarch64 wherever uname would print the machine
// (-m, -a, --machine, combined flags) and is uname otherwise. Fields are
// compared whole, so a hostname or kernel version that merely contains
// "x86_64" stays intact.
const unameWrapper = `#!/bin/sh
# ` + piWrapperMark + `: this test host poses as an arm64 Raspberry Pi.
out=$(/usr/bin/uname "$@") || exit $?
printf '%s\n' "$out" | awk '{ for (i = 1; i <= NF; i++) if ($i == "x86_64") $i = "aarch64"; print }'
`

const archWrapper = `#!/bin/sh
# ` + piWrapperMark + `: this test host poses as an arm64 Raspberry Pi.
exec /usr/local/bin/uname -m
`

// MakePi makes the host look like a Raspberry Pi running 64-bit Raspberry Pi
// OS Bookworm: a device-tree model (NUL-terminated, like the kernel's) at
// /sys/firmware/devicetree/base/model, /boot/firmware/cmdline.txt and
// config.txt, the Pi OS /etc/os-release, and uname/arch in /usr/local/bin
// that report aarch64 (sshd's default PATH and login shells search
// /usr/local/bin first). model "" means DefaultPiModel. Calling it again
// changes the model.
//
// Not faked: /proc/cpuinfo, /proc/device-tree (procfs has no place to mount
// it on x86), dpkg --print-architecture, and the binaries themselves, which
// stay x86-64.
func (h *Host) MakePi(model string) error {
	if model == "" {
		model = DefaultPiModel
	}
	ctx, cancel := context.WithTimeout(context.Background(), fileTimeout)
	defer cancel()
	// The tmpfs hides the real /sys/firmware (acpi, dmi…) only in this host;
	// unmounting a previous one first keeps repeated calls from stacking.
	_, err := h.run(ctx, nil, "sh", "-c", `set -e
umount /sys/firmware 2>/dev/null || true
mount -t tmpfs -o mode=0755 testrack-firmware /sys/firmware
mkdir -p /sys/firmware/devicetree/base
umount /etc/os-release 2>/dev/null || true
mount --bind "$1" /etc/os-release
# Raspberry Pi OS boots with the memory cgroup off; it comes on only after a
# boot with cgroup_enable=memory in cmdline.txt (the fake init's reboot).
umount /proc/cgroups 2>/dev/null || true
awk 'BEGIN { OFS = "\t" } $1 == "memory" { $4 = 0 } { print }' /proc/cgroups > "$2"
mount --bind "$2" /proc/cgroups
`, "sh", filepath.Join(h.dir, "os-release-pi"), filepath.Join(h.dir, "cgroups-pi"))
	if err != nil {
		return err
	}
	files := []struct {
		path string
		data string
		mode os.FileMode
	}{
		{"/sys/firmware/devicetree/base/model", model + "\x00", 0o444},
		{"/boot/firmware/cmdline.txt", PiCmdline, 0o755},
		{"/boot/firmware/config.txt", piConfigTxt, 0o755},
		{"/usr/local/bin/uname", unameWrapper, 0o755},
		{"/usr/local/bin/arch", archWrapper, 0o755},
	}
	for _, f := range files {
		if err := h.WriteFile(f.path, []byte(f.data), f.mode); err != nil {
			return err
		}
	}
	return nil
}

// MakeX86 undoes MakePi: the machine's own os-release, no device-tree model,
// no cmdline.txt or config.txt, the real uname. Hosts start out this way.
func (h *Host) MakeX86() error {
	ctx, cancel := context.WithTimeout(context.Background(), fileTimeout)
	defer cancel()
	_, err := h.run(ctx, nil, "sh", "-c", `
umount /sys/firmware 2>/dev/null
umount /etc/os-release 2>/dev/null
umount /proc/cgroups 2>/dev/null
rm -f /boot/firmware/cmdline.txt /boot/firmware/config.txt
for f in /usr/local/bin/uname /usr/local/bin/arch; do
	if grep -qs '`+piWrapperMark+`' "$f"; then rm -f "$f"; fi
done
[ ! -e /sys/firmware/devicetree ] && [ ! -e /boot/firmware/cmdline.txt ]
`)
	return err
}
