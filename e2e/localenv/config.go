package localenv

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/hcpsnap/hcpsnap/e2e/fixture"
)

// Fixed loopback addresses of the environment. They are constants, not flags:
// the environment is one per machine, and a fixed layout keeps the env file,
// the README and the tests in agreement.
const (
	MgmtEtcdClientPort = 32379
	MgmtEtcdPeerPort   = 32380
	APIServerPort      = 36443
	NodeAgentPort      = 30250
	S3Port             = 39000
	NodeName           = "hcpsnap-local"
	Region             = "us-east-1"
)

// Config says where the environment lives and what hosted cluster it holds.
type Config struct {
	// Dir is the state folder (.localenv): PKI, kubeconfig, data, logs, pids, env.
	Dir string
	// BinDir holds the built dependencies: etcd, etcdctl, etcdutl,
	// kube-apiserver, kube-controller-manager, kubectl, minio.
	BinDir string
	// CRDDir holds the HostedCluster and HostedControlPlane CRD manifests.
	CRDDir string
	// Self is the localenv executable, started again as node agent and operator.
	Self string
	// Cluster and Namespace name the HostedCluster.
	Cluster   string
	Namespace string
	// Bucket is created in the S3 server for backups.
	Bucket string
	// HostedEtcdVersion is the version of the hosted etcd (its binaries are in
	// BinDir/etcd-<version>/); MgmtEtcdVersion that of the management cluster's.
	HostedEtcdVersion string
	MgmtEtcdVersion   string
	// DataMB is the size of the deterministic data written to the hosted etcd.
	DataMB int
	// VolumeMB is the size of each etcd member's data volume;
	// fixture.DefaultVolumeMB(DataMB) when 0.
	VolumeMB int
	// Replicas are the desired replicas of the API Deployments.
	Replicas map[string]int32
	// ImageLayouts are the OCI image layouts the node agent runs digest-pinned
	// images from (bin/image/oci, written by `make image`).
	ImageLayouts []string
	// HostedClusters is how many HostedClusters the environment holds (1 to
	// MaxHostedClusters): Cluster, then Cluster-2, ... in Namespace, each
	// with its own control plane namespace, etcd members, volumes and PKI,
	// for fleet backups. The extra ones hold ExtraDataMB of data.
	HostedClusters int
	// EtcdShards are the etcd shards of the first HostedCluster
	// (ETCD_SHARDS, e.g. "events"; none by default), laid out by
	// fixture.Shard on 127.0.0.51 and up; the CRDs get the shards schema.
	EtcdShards []string
}

// MaxHostedClusters bounds HOSTED_CLUSTERS: each cluster's members take
// three loopback addresses of 127.0.0.11-13, .21-23, ... .41-43.
const MaxHostedClusters = 4

// ExtraDataMB is the most data written into a HostedCluster after the
// first: a fleet backup needs clusters to back up, not large ones, and
// every MiB costs start time.
const ExtraDataMB = 32

// The etcd versions a localenv binary built by make falls back to when
// HOSTED_ETCD_VERSION or MGMT_ETCD_VERSION is not set, so that `bin/localenv
// up` outside make starts the pinned default; make sets them with -X from
// deps/versions.mk.
var (
	defaultHostedEtcdVersion string
	defaultMgmtEtcdVersion   string
)

// APIDeployments are the three Deployments the runbook scales down.
var APIDeployments = []string{"kube-apiserver", "openshift-apiserver", "openshift-oauth-apiserver"}

// ConfigFromEnv reads the configuration from the environment with the
// defaults of `make env-up`: LOCALENV_DIR, LOCALENV_BIN_DIR, LOCALENV_CRD_DIR,
// HOSTED_ETCD_VERSION and MGMT_ETCD_VERSION (set by make from
// deps/versions.mk), HCPSNAP_CLUSTER, HCPSNAP_NAMESPACE, HCPSNAP_BUCKET,
// ETCD_DATA_MB, ETCD_VOLUME_MB, API_REPLICAS (e.g.
// "kube-apiserver=3,openshift-apiserver=2"), HOSTED_CLUSTERS (default 1) and
// LOCALENV_IMAGE_LAYOUTS (comma-separated folders, default bin/image/oci).
func ConfigFromEnv() (Config, error) {
	self, err := os.Executable()
	if err != nil {
		return Config{}, err
	}
	cfg := Config{
		Dir:       envOr("LOCALENV_DIR", ".localenv"),
		BinDir:    envOr("LOCALENV_BIN_DIR", ".cache/bin"),
		CRDDir:    envOr("LOCALENV_CRD_DIR", ".cache/crds"),
		Self:      self,
		Cluster:   envOr("HCPSNAP_CLUSTER", "example"),
		Namespace: envOr("HCPSNAP_NAMESPACE", "clusters"),
		Bucket:    envOr("HCPSNAP_BUCKET", "hcpsnap-backups"),
		Replicas:  map[string]int32{},

		HostedEtcdVersion: envOr("HOSTED_ETCD_VERSION", defaultHostedEtcdVersion),
		MgmtEtcdVersion:   envOr("MGMT_ETCD_VERSION", defaultMgmtEtcdVersion),
	}

	for _, d := range APIDeployments {
		cfg.Replicas[d] = 3
	}
	if cfg.DataMB, err = strconv.Atoi(envOr("ETCD_DATA_MB", "64")); err != nil || cfg.DataMB < 0 {
		return Config{}, fmt.Errorf("ETCD_DATA_MB=%q is not a size in MiB: set a whole number such as 64", os.Getenv("ETCD_DATA_MB"))
	}
	if v := os.Getenv("ETCD_VOLUME_MB"); v != "" {
		if cfg.VolumeMB, err = strconv.Atoi(v); err != nil || cfg.VolumeMB < fixture.MinVolumeMB {
			return Config{}, fmt.Errorf("ETCD_VOLUME_MB=%q is not a volume size: set a whole number of MiB of at least %d", v, fixture.MinVolumeMB)
		}
	}
	if cfg.HostedClusters, err = strconv.Atoi(envOr("HOSTED_CLUSTERS", "1")); err != nil || cfg.HostedClusters < 1 || cfg.HostedClusters > MaxHostedClusters {
		return Config{}, fmt.Errorf("HOSTED_CLUSTERS=%q is not a number of HostedClusters: set 1 to %d", os.Getenv("HOSTED_CLUSTERS"), MaxHostedClusters)
	}
	if cfg.EtcdShards, err = etcdShardsFromEnv(); err != nil {
		return Config{}, err
	}
	if r := os.Getenv("API_REPLICAS"); r != "" {
		if err := parseReplicas(r, cfg.Replicas); err != nil {
			return Config{}, err
		}
	}
	for _, l := range strings.Split(envOr("LOCALENV_IMAGE_LAYOUTS", filepath.Join("bin", "image", "oci")), ",") {
		if l = strings.TrimSpace(l); l != "" {
			cfg.ImageLayouts = append(cfg.ImageLayouts, l)
		}
	}
	for i := range cfg.ImageLayouts {
		if cfg.ImageLayouts[i], err = filepath.Abs(cfg.ImageLayouts[i]); err != nil {
			return Config{}, err
		}
	}
	for _, p := range []*string{&cfg.Dir, &cfg.BinDir, &cfg.CRDDir} {
		if *p, err = filepath.Abs(*p); err != nil {
			return Config{}, err
		}
	}
	return cfg, nil
}

func parseReplicas(s string, into map[string]int32) error {
	for _, kv := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		n, err := strconv.ParseInt(val, 10, 32)
		if !ok || err != nil || n < 0 || !knownDeployment(name) {
			return fmt.Errorf("API_REPLICAS entry %q is not <deployment>=<count>: use names from %s", kv, strings.Join(APIDeployments, ", "))
		}
		into[name] = int32(n)
	}
	return nil
}

func knownDeployment(name string) bool {
	for _, d := range APIDeployments {
		if d == name {
			return true
		}
	}
	return false
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// path returns a path inside the state folder.
func (c Config) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

// bin returns the path of a built dependency.
func (c Config) bin(name string) string { return filepath.Join(c.BinDir, name) }

// etcdVersionPattern is what an etcd version looks like in deps/versions.mk.
var etcdVersionPattern = regexp.MustCompile(`^v3\.[0-9]+\.[0-9]+$`)

// checkVersions refuses etcd versions that are not versions: only `up` needs
// them, so `down` and `running` work without.
func (c Config) checkVersions() error {
	for _, v := range []struct{ name, value string }{{"HOSTED_ETCD_VERSION", c.HostedEtcdVersion}, {"MGMT_ETCD_VERSION", c.MgmtEtcdVersion}} {
		if !etcdVersionPattern.MatchString(v.value) {
			return fmt.Errorf("%s=%q is not an etcd version: set it to one built by 'make deps' (deps/versions.mk), such as v3.6.5, or start through 'make env-up'", v.name, v.value)
		}
	}
	return nil
}

// EtcdBinDir is the folder of etcd, etcdctl and etcdutl of one etcd version.
func (c Config) EtcdBinDir(version string) string { return c.bin("etcd-" + version) }

// HostedEtcdBin returns the path of a binary (etcd, etcdctl, etcdutl) of the hosted etcd's version.
func (c Config) HostedEtcdBin(name string) string {
	return filepath.Join(c.EtcdBinDir(c.HostedEtcdVersion), name)
}

// HCPNamespace is the namespace of the hosted control plane.
func (c Config) HCPNamespace() string { return c.Namespace + "-" + c.Cluster }
