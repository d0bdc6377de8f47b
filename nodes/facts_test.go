package nodes

import (
	"reflect"
	"strings"
	"testing"
)

// blob renders a multi-line value the way the facts script does.
func blob(key, content string) string {
	return key + "<<" + factsDelim + "\n" + content + "\n" + factsDelim + "\n"
}

func TestParseFacts(t *testing.T) {
	const k3sSum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name string
		out  string
		want Facts
	}{
		{
			name: "fresh Raspberry Pi OS, cgroup v1 memory disabled",
			out: "uname_m=aarch64\nhostname=pinemaster\n" +
				blob("os_release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n") +
				"systemd=1\n" +
				blob("model", "Raspberry Pi 4 Model B Rev 1.4") +
				"cmdline_path=/boot/firmware/cmdline.txt\n" +
				blob("cmdline", "console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootwait\n") +
				"proc_cgroups_memory=0\n" +
				"iptables=iptables v1.8.9 (nf_tables)\n" +
				"memtotal_kb=3884100\n" +
				"df_path=/var/lib\n" +
				"df=/dev/mmcblk0p2  30358348 2912528 26184580  11% /\n" +
				"end=1\n",
			want: Facts{Hostname: "pinemaster", Arch: "arm64", Machine: "aarch64", ArchKnown: true,
				OS:   OSRelease{ID: "debian", VersionID: "12", PrettyName: "Debian GNU/Linux 12 (bookworm)"},
				Init: "systemd", Model: "Raspberry Pi 4 Model B Rev 1.4",
				CmdlinePath: "/boot/firmware/cmdline.txt", Cmdline: "console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootwait",
				CgroupVersion: 1, MemoryCgroup: false,
				Iptables: "iptables v1.8.9 (nf_tables)", IptablesVersion: "1.8.9", IptablesMode: "nf_tables",
				MemTotal: 3884100 * 1024, RancherDiskPath: "/var/lib", RancherDiskFree: 26184580 * 1024},
		},
		{
			name: "x86 with k3s installed, cgroup v2",
			out: "uname_m=x86_64\nhostname=potato-7\n" +
				blob("os_release", "ID=ubuntu\nVERSION_ID=\"24.04\"\nPRETTY_NAME=\"Ubuntu 24.04.1 LTS\"") +
				"systemd=1\ncmdline_path=\n" +
				"cgroup2_controllers=cpuset cpu io memory hugetlb pids rdma misc\n" +
				"iptables=iptables v1.8.10 (legacy)\nmemtotal_kb=16303460\n" +
				"df_path=/var/lib/rancher\ndf=/dev/mapper/vg0-root 100 50 40 56% /var/lib/rancher\n" +
				"k3s_present=1\nk3s_version=k3s version v1.33.5+k3s1 (9a1c6e26)\nk3s_sha256=" + k3sSum + "\n" +
				"k3s_unit_path=/etc/systemd/system/k3s-agent.service\n" +
				blob("k3s_unit", "[Unit]\nDescription=Lightweight Kubernetes\n\n[Service]\nExecStart=/usr/local/bin/k3s agent\n") +
				"k3s_config_present=1\n" +
				blob("k3s_config", "server: https://192.168.1.101:6443\ntoken-file: /etc/rancher/k3s/token\n") +
				"end=1\n",
			want: Facts{Hostname: "potato-7", Arch: "amd64", Machine: "x86_64", ArchKnown: true,
				OS:   OSRelease{ID: "ubuntu", VersionID: "24.04", PrettyName: "Ubuntu 24.04.1 LTS"},
				Init: "systemd", CgroupVersion: 2, MemoryCgroup: true,
				Iptables: "iptables v1.8.10 (legacy)", IptablesVersion: "1.8.10", IptablesMode: "legacy",
				MemTotal: 16303460 * 1024, RancherDiskPath: "/var/lib/rancher", RancherDiskFree: 40 * 1024,
				K3sInstalled: true, K3sVersion: "v1.33.5+k3s1", K3sSHA256: k3sSum,
				K3sUnitPath:      "/etc/systemd/system/k3s-agent.service",
				K3sUnit:          "[Unit]\nDescription=Lightweight Kubernetes\n\n[Service]\nExecStart=/usr/local/bin/k3s agent\n",
				K3sConfigPresent: true, K3sConfig: "server: https://192.168.1.101:6443\ntoken-file: /etc/rancher/k3s/token\n"},
		},
		{
			name: "32-bit Alpine on a Pi 3 with OpenRC, old iptables, Pi model with NUL",
			out: "uname_m=armv7l\nhostname=alp\n" +
				blob("os_release", "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME='Alpine Linux v3.20'") +
				"openrc=1\n" + blob("model", "Raspberry Pi 3 Model B Plus Rev 1.3\x00") +
				"cmdline_path=/boot/cmdline.txt\n" + blob("cmdline", "modules=loop cgroup_enable=memory cgroup_memory=1") +
				"proc_cgroups_memory=1\niptables=iptables v1.6.2\nmemtotal_kb=948000\n" +
				"df_path=/var/lib\ndf=/dev/my disk 1000 10 990 1% /var/lib\n" +
				"k3s_present=1\nk3s_version=\nk3s_unit_path=/etc/init.d/k3s\n" + blob("k3s_unit", "#!/sbin/openrc-run") +
				"k3s_config_present=1\nk3s_config_unreadable=1\nend=1\n",
			want: Facts{Hostname: "alp", Arch: "arm", Machine: "armv7l", ArchKnown: true,
				OS:   OSRelease{ID: "alpine", VersionID: "3.20.3", PrettyName: "Alpine Linux v3.20"},
				Init: "openrc", Model: "Raspberry Pi 3 Model B Plus Rev 1.3",
				CmdlinePath: "/boot/cmdline.txt", Cmdline: "modules=loop cgroup_enable=memory cgroup_memory=1",
				CgroupVersion: 1, MemoryCgroup: true,
				Iptables: "iptables v1.6.2", IptablesVersion: "1.6.2", IptablesMode: "legacy",
				MemTotal: 948000 * 1024, RancherDiskPath: "/var/lib", RancherDiskFree: 990 * 1024,
				K3sInstalled: true, K3sUnitPath: "/etc/init.d/k3s", K3sUnit: "#!/sbin/openrc-run", K3sConfigPresent: true,
				Warnings: []string{"/usr/local/bin/k3s exists but `k3s --version` said \"\"",
					"/etc/rancher/k3s/config.yaml is not readable (sudo disabled?)"}},
		},
		{
			name: "unknown architecture is kept and flagged",
			out:  "uname_m=riscv64\ncmdline_path=\nend=1\n",
			want: Facts{Arch: "riscv64", Machine: "riscv64", ArchKnown: false,
				Warnings: []string{`unknown architecture "riscv64" (rack knows arm64, amd64, arm)`}},
		},
		{
			name: "a value containing = and a file containing key=value lines stay intact",
			out:  "uname_m=x86_64\ncmdline_path=/boot/cmdline.txt\n" + blob("cmdline", "a=b c=d\nend=1") + "end=1\n",
			want: Facts{Arch: "amd64", Machine: "x86_64", ArchKnown: true, CmdlinePath: "/boot/cmdline.txt", Cmdline: "a=b c=d\nend=1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFacts([]byte(tt.out))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
	if f, _ := ParseFacts([]byte(tests[0].out)); !f.IsPi() {
		t.Error("IsPi: want true for a Raspberry Pi model")
	}
}

func TestParseFactsTruncated(t *testing.T) {
	for _, out := range []string{
		"uname_m=aarch64\n", // no end marker: the script died
		"uname_m=aarch64\ncmdline<<" + factsDelim + "\nabc\n", // unterminated block
	} {
		if _, err := ParseFacts([]byte(out)); err == nil || !strings.Contains(err.Error(), "truncated") {
			t.Errorf("ParseFacts(%q) = %v, want a truncation error", out, err)
		}
	}
}

func TestNormalizeArch(t *testing.T) {
	tests := map[string]string{"aarch64": "arm64", "arm64": "arm64", "x86_64": "amd64", "armv7l": "arm", "armv6l": "arm", "armv8l": "arm"}
	for in, want := range tests {
		if got, ok := NormalizeArch(in); got != want || !ok {
			t.Errorf("NormalizeArch(%q) = %q %v", in, got, ok)
		}
	}
	if got, ok := NormalizeArch("mips"); got != "mips" || ok {
		t.Errorf("NormalizeArch(mips) = %q %v", got, ok)
	}
}

// FuzzParseFacts: whatever a host prints, parsing returns (no panic), and a
// successful parse always saw the end marker.
func FuzzParseFacts(f *testing.F) {
	f.Add([]byte("uname_m=aarch64\nend=1\n"))
	f.Add([]byte(blob("cmdline", "a\nb") + "df=x 1 2 3 4% /\nend=1\n"))
	f.Add([]byte("cmdline<<" + factsDelim + "\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		if _, err := ParseFacts(out); err == nil && !strings.Contains(string(out), "end=1") {
			t.Errorf("parsed output without an end marker: %q", out)
		}
	})
}
