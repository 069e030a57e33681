package localenv

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hcpsnap/hcpsnap/e2e/fixture"
)

// writeEnv writes the shell file that lets anyone use the environment with
// kubectl, the aws CLI, etcdctl and hcpsnap: `source .localenv/env`.
func (c Config) writeEnv(s secrets) error {
	vars := map[string]string{
		"LOCALENV_DIR":          c.Dir,
		"KUBECONFIG":            c.Kubeconfig(),
		"AWS_ACCESS_KEY_ID":     s.S3AccessKey,
		"AWS_SECRET_ACCESS_KEY": s.S3SecretKey,
		"AWS_REGION":            Region,
		"AWS_DEFAULT_REGION":    Region,
		"AWS_ENDPOINT_URL_S3":   c.S3Endpoint(),
		// Never let an SDK look for instance metadata: only loopback is ours.
		"AWS_EC2_METADATA_DISABLED": "true",
		"HCPSNAP_BUCKET":            c.Bucket,
		"HCPSNAP_CLUSTER":           c.Cluster,
		"HCPSNAP_NAMESPACE":         c.Namespace,
		// etcd's binaries on the host are the hosted etcd's version.
		"ETCD":                c.HostedEtcdBin("etcd"),
		"ETCDCTL":             c.HostedEtcdBin("etcdctl"),
		"ETCDUTL":             c.HostedEtcdBin("etcdutl"),
		"HOSTED_ETCD_VERSION": c.HostedEtcdVersion,
	}
	// The hosted etcd as seen from the host, for etcdctl on the host and for
	// tests. Named LOCALENV_* so that they never set an hcpsnap flag.
	fx := c.FixtureConfig(nil)
	vars["LOCALENV_ETCD_ENDPOINTS"] = strings.Join(fx.EtcdEndpoints(), ",")
	vars["LOCALENV_ETCD_CACERT"] = fx.EtcdCAFile()
	vars["LOCALENV_ETCD_CERT"] = fx.EtcdClientCertFile()
	vars["LOCALENV_ETCD_KEY"] = fx.EtcdClientKeyFile()
	// The members' certificate names no IP address, as HyperShift's: a
	// client on the host dials their IPs and verifies this name (etcdctl has
	// no flag for it; run it inside a member with kubectl exec instead).
	vars["LOCALENV_ETCD_SERVER_NAME"] = fixture.EtcdServerName(c.HCPNamespace())
	vars["LOCALENV_BIN_DIR"] = c.BinDir
	// Every HostedCluster, namespace/name separated by spaces: the first is
	// HCPSNAP_CLUSTER; the others are there for fleet backups
	// (HOSTED_CLUSTERS).
	var clusters []string
	for _, f := range c.FixtureConfigs(nil) {
		clusters = append(clusters, f.Namespace+"/"+f.Name)
	}
	vars["LOCALENV_HOSTED_CLUSTERS"] = strings.Join(clusters, " ")
	// The first HostedCluster's etcd shards (ETCD_SHARDS), name=memberIP
	// separated by commas; empty without shards.
	var shards []string
	for _, s := range fx.Shards {
		shards = append(shards, s.Name+"="+s.MemberIP)
	}
	vars["LOCALENV_ETCD_SHARDS"] = strings.Join(shards, ",")
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Written by `make env-up`; source it to use the local environment. Holds credentials: keep it private.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(vars[k]))
	}
	fmt.Fprintf(&b, "export PATH=%s:\"$PATH\"\n", shellQuote(c.BinDir))
	tmp := c.EnvFile() + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, c.EnvFile())
}

// ReadEnv parses an env file written by `make env-up` into a map, for tests.
func ReadEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w; start the environment with 'make env-up'", path, err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, "export ")
		if !ok {
			continue
		}
		k, v, ok := strings.Cut(rest, "=")
		if !ok || k == "PATH" {
			continue
		}
		vars[k] = shellUnquote(v)
	}
	return vars, sc.Err()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shellUnquote(s string) string {
	if len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'' {
		return strings.ReplaceAll(s[1:len(s)-1], `'\''`, "'")
	}
	return s
}

// DefaultEnvFile finds .localenv/env from the working directory upwards, so
// that tests in e2e/ find the environment started at the repository root.
func DefaultEnvFile() string {
	if d := os.Getenv("LOCALENV_DIR"); d != "" {
		return filepath.Join(d, "env")
	}
	dir, _ := os.Getwd()
	for {
		p := filepath.Join(dir, ".localenv", "env")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return filepath.Join(".localenv", "env")
		}
		dir = parent
	}
}
