package localenv

import (
	"strings"
	"testing"
)

func TestConfigFromEnvEtcdSettings(t *testing.T) {
	t.Setenv("LOCALENV_BIN_DIR", "/opt/bin")
	t.Setenv("HOSTED_ETCD_VERSION", "v3.6.5")
	t.Setenv("MGMT_ETCD_VERSION", "v3.5.17")
	t.Setenv("ETCD_DATA_MB", "256")
	t.Setenv("ETCD_VOLUME_MB", "")
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.checkVersions(); err != nil {
		t.Fatal(err)
	}
	if got := cfg.HostedEtcdBin("etcdutl"); got != "/opt/bin/etcd-v3.6.5/etcdutl" {
		t.Errorf("hosted etcdutl %s", got)
	}
	fx := cfg.FixtureConfig(nil)
	if fx.EtcdBinDir != "/opt/bin/etcd-v3.6.5" || fx.VolumeMB != 0 || fx.NodeName != NodeName {
		t.Errorf("fixture config: bin %s, volume %d MiB, node %s", fx.EtcdBinDir, fx.VolumeMB, fx.NodeName)
	}

	t.Setenv("ETCD_VOLUME_MB", "2048")
	if cfg, err = ConfigFromEnv(); err != nil || cfg.VolumeMB != 2048 {
		t.Errorf("ETCD_VOLUME_MB=2048: %d, %v", cfg.VolumeMB, err)
	}
	for _, bad := range []string{"12", "big", "-1"} {
		t.Setenv("ETCD_VOLUME_MB", bad)
		if _, err := ConfigFromEnv(); err == nil || !strings.Contains(err.Error(), "ETCD_VOLUME_MB") {
			t.Errorf("ETCD_VOLUME_MB=%s: %v", bad, err)
		}
	}
	t.Setenv("ETCD_VOLUME_MB", "")

	for _, bad := range []string{"", "3.6.5", "v3.6.5; rm -rf /", "../v3.6.5"} {
		t.Setenv("HOSTED_ETCD_VERSION", bad)
		cfg, err := ConfigFromEnv()
		if err != nil {
			t.Fatal(err) // only `up` needs a version
		}
		if err := cfg.checkVersions(); err == nil || !strings.Contains(err.Error(), "HOSTED_ETCD_VERSION") {
			t.Errorf("HOSTED_ETCD_VERSION=%q: %v", bad, err)
		}
	}
}

// TestHostedClusters: HOSTED_CLUSTERS=N lays out N clusters, each with its
// own name, state folder and member addresses; bad values are refused.
func TestHostedClusters(t *testing.T) {
	t.Setenv("LOCALENV_DIR", "/tmp/le")
	t.Setenv("ETCD_DATA_MB", "64")
	t.Setenv("HOSTED_CLUSTERS", "")
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if fxs := cfg.FixtureConfigs(nil); len(fxs) != 1 || fxs[0].Name != "example" || fxs[0].StateDir != "/tmp/le/fixture" {
		t.Fatalf("default: %+v", fxs)
	}
	t.Setenv("HOSTED_CLUSTERS", "3")
	if cfg, err = ConfigFromEnv(); err != nil {
		t.Fatal(err)
	}
	fxs := cfg.FixtureConfigs(nil)
	if len(fxs) != 3 {
		t.Fatalf("%d clusters, want 3", len(fxs))
	}
	want := []struct {
		name, state, ips string
		dataMB           int
	}{
		{"example", "/tmp/le/fixture", "", 64},
		{"example-2", "/tmp/le/fixture/example-2", "127.0.0.21,127.0.0.22,127.0.0.23", ExtraDataMB},
		{"example-3", "/tmp/le/fixture/example-3", "127.0.0.31,127.0.0.32,127.0.0.33", ExtraDataMB},
	}
	for i, w := range want {
		f := fxs[i]
		if f.Name != w.name || f.Namespace != "clusters" || f.StateDir != w.state || strings.Join(f.MemberIPs, ",") != w.ips || f.DataMB != w.dataMB {
			t.Errorf("cluster %d: %s/%s state %s members %v data %d; want %+v", i+1, f.Namespace, f.Name, f.StateDir, f.MemberIPs, f.DataMB, w)
		}
	}
	for _, bad := range []string{"0", "5", "two"} {
		t.Setenv("HOSTED_CLUSTERS", bad)
		if _, err := ConfigFromEnv(); err == nil || !strings.Contains(err.Error(), "HOSTED_CLUSTERS") {
			t.Errorf("HOSTED_CLUSTERS=%s: %v", bad, err)
		}
	}
}
