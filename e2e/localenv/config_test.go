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
