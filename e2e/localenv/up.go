package localenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/charmbracelet/log"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/hcpsnap/hcpsnap/e2e/fixture"
	"github.com/hcpsnap/hcpsnap/e2e/pki"
)

// Up starts the whole environment and returns once the hosted control plane
// is ready, having written <Dir>/env. When any part fails it stops what it
// started, so a failed `up` leaves nothing running.
func Up(ctx context.Context, cfg Config, logger *log.Logger) (err error) {
	if cfg.alive("kube-apiserver") {
		return fmt.Errorf("the environment in %s is already running: run 'make env-down' first", cfg.Dir)
	}
	if err := cfg.checkVersions(); err != nil {
		return err
	}
	needed := []string{cfg.bin("kube-apiserver"), cfg.bin("kube-controller-manager"), cfg.bin("minio"),
		filepath.Join(cfg.EtcdBinDir(cfg.MgmtEtcdVersion), "etcd")}
	for _, b := range []string{"etcd", "etcdctl", "etcdutl"} {
		needed = append(needed, cfg.HostedEtcdBin(b))
	}
	for _, b := range needed {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("dependency %s is missing: run 'make deps' to build it", b)
		}
	}
	defer func() {
		if err != nil {
			logger.Error("environment failed to start; stopping what was started", "err", err, "logs", cfg.path("logs"))
			if stopErr := cfg.stopAll(10 * time.Second); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()
	// A new environment starts from empty state; logs of earlier runs are kept.
	if err := cfg.unmountAll(); err != nil {
		return err
	}
	for _, d := range []string{"pki", "etcd", "minio", "nodeagent", "fixture", "pids"} {
		if err := os.RemoveAll(cfg.path(d)); err != nil {
			return err
		}
	}
	reservePorts(logger)
	if err := waitPortsFree(30 * time.Second); err != nil {
		return err
	}
	secrets, err := cfg.writePKI()
	if err != nil {
		return fmt.Errorf("PKI: %w", err)
	}

	logger.Info("starting management etcd", "endpoint", fmt.Sprintf("http://127.0.0.1:%d", MgmtEtcdClientPort), "version", cfg.MgmtEtcdVersion)
	if err := cfg.startEtcd(ctx); err != nil {
		return err
	}
	logger.Info("starting kube-apiserver", "endpoint", fmt.Sprintf("https://127.0.0.1:%d", APIServerPort))
	if err := cfg.startAPIServer(ctx); err != nil {
		return err
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig())
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	logger.Info("starting kube-controller-manager")
	if err := cfg.startControllerManager(ctx, client); err != nil {
		return err
	}
	logger.Info("applying HyperShift CRDs", "dir", cfg.CRDDir)
	if err := cfg.applyCRDs(ctx, dyn); err != nil {
		return err
	}
	logger.Info("starting S3 server (MinIO)", "endpoint", cfg.S3Endpoint())
	if err := cfg.startS3(ctx, secrets); err != nil {
		return err
	}
	logger.Info("starting node agent", "node", NodeName)
	if err := cfg.startNodeAgent(ctx, client); err != nil {
		return err
	}
	logger.Info("starting operator stand-in")
	if err := cfg.start(daemon{name: "operator", bin: cfg.Self, args: []string{"operator", "--kubeconfig", cfg.Kubeconfig()}}); err != nil {
		return err
	}
	for _, fx := range cfg.FixtureConfigs(logger) {
		volumeMB := fx.VolumeMB
		if volumeMB == 0 {
			volumeMB = fixture.DefaultVolumeMB(fx.DataMB)
		}
		logger.Info("laying out the hosted control plane", "cluster", fx.Namespace+"/"+fx.Name,
			"etcd", cfg.HostedEtcdVersion, "dataMB", fx.DataMB, "volumeMB", volumeMB, "members", strings.Join(fx.MemberIPs, ","))
		if err := fixture.Apply(ctx, fx); err != nil {
			return fmt.Errorf("hosted control plane %s/%s: %w (logs in %s)", fx.Namespace, fx.Name, err, cfg.path("logs"))
		}
	}
	if err := cfg.writeEnv(secrets); err != nil {
		return err
	}
	logger.Info("environment ready", "env", cfg.EnvFile())
	return nil
}

// secrets are the generated credentials written into the env file.
type secrets struct {
	AdminToken  string
	S3AccessKey string
	S3SecretKey string
	KMSKey      string
}

// Kubeconfig is the admin kubeconfig of the management cluster.
func (c Config) Kubeconfig() string { return c.path("kubeconfig") }

// EnvFile is the shell file that exports the environment's settings.
func (c Config) EnvFile() string { return c.path("env") }

// S3Endpoint is the URL of the S3 server.
func (c Config) S3Endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", S3Port) }

// FixtureConfig is the configuration of the hosted control plane.
func (c Config) FixtureConfig(logger *log.Logger) fixture.Config {
	return fixture.Config{
		Kubeconfig: c.Kubeconfig(),
		Name:       c.Cluster,
		Namespace:  c.Namespace,
		Replicas:   c.Replicas,
		EtcdBinDir: c.EtcdBinDir(c.HostedEtcdVersion),
		StateDir:   c.path("fixture"),
		DataMB:     c.DataMB,
		VolumeMB:   c.VolumeMB,
		NodeName:   NodeName,
		Shards:     c.fixtureShards(),
		Log:        logger,
	}
}

// FixtureConfigs are the configurations of every hosted control plane:
// FixtureConfig first, then one per extra HostedCluster (HostedClusters).
// The i-th cluster (from 1) is named Cluster-i; its members have the
// addresses 127.0.0.<10i+1..10i+3>; its PKI and volumes live in
// <Dir>/fixture/<name>/; it holds at most ExtraDataMB of data.
func (c Config) FixtureConfigs(logger *log.Logger) []fixture.Config {
	out := []fixture.Config{c.FixtureConfig(logger)}
	for i := 2; i <= c.HostedClusters; i++ {
		fx := c.FixtureConfig(logger)
		fx.Name = fmt.Sprintf("%s-%d", c.Cluster, i)
		fx.StateDir = c.path("fixture", fx.Name)
		fx.DataMB = min(c.DataMB, ExtraDataMB)
		fx.Shards = nil
		fx.MemberIPs = nil
		for m := 1; m <= 3; m++ {
			fx.MemberIPs = append(fx.MemberIPs, fmt.Sprintf("127.0.0.%d", 10*i+m))
		}
		out = append(out, fx)
	}
	return out
}

func (c Config) writePKI() (secrets, error) {
	dir := c.path("pki")
	ca, err := pki.NewCA("hcpsnap-localenv-ca")
	if err != nil {
		return secrets{}, err
	}
	if err := pki.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM); err != nil {
		return secrets{}, err
	}
	leaves := []struct {
		file  string
		cn    string
		orgs  []string
		hosts []string
		usage pki.Usage
	}{
		{"apiserver", "kube-apiserver", nil, []string{"127.0.0.1", "localhost", "kubernetes", "kubernetes.default.svc"}, pki.Server},
		{"kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, pki.Client},
		{"nodeagent", "system:node:" + NodeName, nil, []string{"127.0.0.1", NodeName}, pki.Server},
	}
	for _, l := range leaves {
		p, err := ca.Issue(l.cn, l.orgs, l.hosts, l.usage)
		if err != nil {
			return secrets{}, err
		}
		if err := p.Write(dir, l.file); err != nil {
			return secrets{}, err
		}
	}
	priv, pub, err := pki.NewKeyPair()
	if err != nil {
		return secrets{}, err
	}
	if err := pki.WriteFile(filepath.Join(dir, "sa.key"), priv); err != nil {
		return secrets{}, err
	}
	if err := pki.WriteFile(filepath.Join(dir, "sa.pub"), pub); err != nil {
		return secrets{}, err
	}
	s := secrets{AdminToken: randomHex(24), S3AccessKey: "hcpsnap" + randomHex(6), S3SecretKey: randomHex(20), KMSKey: randomBase64(32)}
	tokens := fmt.Sprintf("%s,admin,admin-uid,\"system:masters\"\n", s.AdminToken)
	if err := pki.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(tokens)); err != nil {
		return secrets{}, err
	}
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: localenv
  cluster:
    server: https://127.0.0.1:%d
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: localenv
  context: {cluster: localenv, user: admin}
current-context: localenv
`, APIServerPort, filepath.Join(dir, "ca.crt"), s.AdminToken)
	return s, pki.WriteFile(c.Kubeconfig(), []byte(kubeconfig))
}

func (c Config) startEtcd(ctx context.Context) error {
	err := c.start(daemon{name: "etcd", bin: filepath.Join(c.EtcdBinDir(c.MgmtEtcdVersion), "etcd"), args: []string{
		"--name", "mgmt",
		"--data-dir", c.path("etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", MgmtEtcdClientPort),
		"--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", MgmtEtcdClientPort),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", MgmtEtcdPeerPort),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", MgmtEtcdPeerPort),
		"--initial-cluster", fmt.Sprintf("mgmt=http://127.0.0.1:%d", MgmtEtcdPeerPort),
		"--listen-metrics-urls", "",
		"--log-level", "warn",
	}})
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, "etcd", fmt.Sprintf("http://127.0.0.1:%d/health", MgmtEtcdClientPort), 30*time.Second)
}

func (c Config) startAPIServer(ctx context.Context) error {
	pkiDir := c.path("pki")
	p := func(f string) string { return filepath.Join(pkiDir, f) }
	err := c.start(daemon{name: "kube-apiserver", bin: c.bin("kube-apiserver"), args: []string{
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", MgmtEtcdClientPort),
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(APIServerPort),
		"--tls-cert-file", p("apiserver.crt"),
		"--tls-private-key-file", p("apiserver.key"),
		"--client-ca-file", p("ca.crt"),
		"--token-auth-file", p("tokens.csv"),
		"--authorization-mode", "Node,RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", p("sa.pub"),
		"--service-account-signing-key-file", p("sa.key"),
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--kubelet-client-certificate", p("kubelet-client.crt"),
		"--kubelet-client-key", p("kubelet-client.key"),
		"--kubelet-certificate-authority", p("ca.crt"),
		"--kubelet-preferred-address-types", "InternalIP",
		"--profiling=false",
		"--v", "1",
	}})
	if err != nil {
		return err
	}
	return c.waitFor(ctx, "kube-apiserver", "kube-apiserver", 90*time.Second, func(ctx context.Context) error {
		restCfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
		if err != nil {
			return err
		}
		client, err := kubernetes.NewForConfig(restCfg)
		if err != nil {
			return err
		}
		_, err = client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	})
}

func (c Config) startControllerManager(ctx context.Context, client kubernetes.Interface) error {
	err := c.start(daemon{name: "kube-controller-manager", bin: c.bin("kube-controller-manager"), args: []string{
		"--kubeconfig", c.Kubeconfig(),
		"--leader-elect=false",
		"--controllers", "*",
		"--service-account-private-key-file", c.path("pki", "sa.key"),
		"--root-ca-file", c.path("pki", "ca.crt"),
		"--secure-port", "0",
		"--concurrent-deployment-syncs", "10",
		"--v", "1",
	}})
	if err != nil {
		return err
	}
	// The service account controller creating `default` proves the manager runs.
	return c.waitFor(ctx, "kube-controller-manager", "kube-controller-manager", 60*time.Second, func(ctx context.Context) error {
		_, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func (c Config) applyCRDs(ctx context.Context, dyn dynamic.Interface) error {
	files, _ := filepath.Glob(filepath.Join(c.CRDDir, "*.yaml"))
	if len(files) == 0 {
		return fmt.Errorf("no CRD manifests in %s: run 'make deps' to extract them", c.CRDDir)
	}
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &obj.Object); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if len(c.EtcdShards) > 0 {
			if err := addShardsSchema(obj); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
		if _, err := dyn.Resource(crdGVR).Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: "localenv", Force: true}); err != nil {
			return fmt.Errorf("apply CRD %s: %w", obj.GetName(), err)
		}
		names = append(names, obj.GetName())
	}
	return c.waitFor(ctx, "CRDs established", "kube-apiserver", 30*time.Second, func(ctx context.Context) error {
		for _, n := range names {
			crd, err := dyn.Resource(crdGVR).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			established := false
			for _, cond := range conds {
				m, _ := cond.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					established = true
				}
			}
			if !established {
				return fmt.Errorf("CRD %s not established", n)
			}
		}
		return nil
	})
}

func (c Config) startS3(ctx context.Context, s secrets) error {
	err := c.start(daemon{name: "minio", bin: c.bin("minio"),
		args: []string{"server", "--quiet", "--address", fmt.Sprintf("127.0.0.1:%d", S3Port),
			"--console-address", fmt.Sprintf("127.0.0.1:%d", S3Port+1), c.path("minio", "data")},
		env: []string{
			"MINIO_ROOT_USER=" + s.S3AccessKey,
			"MINIO_ROOT_PASSWORD=" + s.S3SecretKey,
			"MINIO_REGION=" + Region,
			"MINIO_BROWSER=off",
			"MINIO_UPDATE=off",
			"MINIO_CALLHOME_ENABLE=off",
			// A static KMS key enables SSE-S3 and SSE-KMS (key ID hcpsnap-key)
			// for the key bundle; it lives only as long as the environment.
			"MINIO_KMS_SECRET_KEY=hcpsnap-key:" + s.KMSKey,
			"HOME=" + c.path("minio"),
		},
	})
	if err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, "minio", c.S3Endpoint()+"/minio/health/live", 60*time.Second); err != nil {
		return err
	}
	client := s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(c.S3Endpoint()),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.S3AccessKey, s.S3SecretKey, ""),
	})
	_, err = client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(c.Bucket)})
	var owned *s3types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return fmt.Errorf("create bucket %s: %w", c.Bucket, err)
	}
	return nil
}

func (c Config) startNodeAgent(ctx context.Context, client kubernetes.Interface) error {
	err := c.start(daemon{name: "nodeagent", bin: c.Self, args: []string{"nodeagent",
		"--kubeconfig", c.Kubeconfig(),
		"--node-name", NodeName,
		"--listen", fmt.Sprintf("127.0.0.1:%d", NodeAgentPort),
		"--cert", c.path("pki", "nodeagent.crt"),
		"--key", c.path("pki", "nodeagent.key"),
		"--client-ca", c.path("pki", "ca.crt"),
		"--state-dir", c.path("nodeagent"),
		"--image-layouts", strings.Join(c.ImageLayouts, ","),
	}})
	if err != nil {
		return err
	}
	return c.waitFor(ctx, "node "+NodeName+" Ready", "nodeagent", 30*time.Second, func(ctx context.Context) error {
		n, err := client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == "Ready" && cond.Status == "True" {
				return nil
			}
		}
		return errors.New("not Ready")
	})
}

// waitFor polls check every 250ms until it succeeds, the daemon behind it has
// died (its log tail is returned), or the timeout passes.
func (c Config) waitFor(ctx context.Context, what, logName string, timeout time.Duration, check func(context.Context) error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if last = check(ctx); last == nil {
			return true, nil
		}
		if apierrors.IsForbidden(last) || apierrors.IsUnauthorized(last) {
			return false, last
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("%s not ready after %s: %v%s", what, timeout, last, c.logTail(logName))
	}
	return nil
}

func (c Config) waitHTTP(ctx context.Context, name, url string, timeout time.Duration) error {
	return c.waitFor(ctx, name, name, timeout, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	})
}

// logTail returns the last lines of a daemon's log for an error message.
func (c Config) logTail(name string) string {
	b, err := os.ReadFile(c.path("logs", name+".log"))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return "\n  last lines of " + c.path("logs", name+".log") + ":\n    " + strings.Join(lines, "\n    ")
}

func randomBase64(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
