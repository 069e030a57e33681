//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/kubectl/pkg/util/podutils"
)

// runbookEtcdctl is the runbook's etcdctl command line inside an etcd pod.
var runbookEtcdctl = []string{"/usr/bin/etcdctl",
	"--cacert", "/etc/etcd/tls/etcd-ca/ca.crt",
	"--cert", "/etc/etcd/tls/client/etcd-client.crt",
	"--key", "/etc/etcd/tls/client/etcd-client.key",
	"--endpoints=localhost:2379"}

func TestExecReachesOwnEtcdMember(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	// etcd-0 answers endpoint health through pods/exec with the runbook's TLS flags.
	out, stderr, err := env.exec(ctx, "etcd-0", append(runbookEtcdctl, "endpoint", "health")...)
	if err != nil {
		t.Fatalf("endpoint health in etcd-0: %v (stderr %q)", err, stderr)
	}
	if !strings.Contains(out, "localhost:2379 is healthy") {
		t.Fatalf("endpoint health in etcd-0: %q", out)
	}
	// Each pod's localhost:2379 is its own member: the member IDs differ and
	// match the member list entry with that pod's name.
	ids := map[string]uint64{}
	for _, pod := range []string{"etcd-0", "etcd-1", "etcd-2"} {
		out, stderr, err := env.exec(ctx, pod, append(runbookEtcdctl, "endpoint", "status", "-w", "json")...)
		if err != nil {
			t.Fatalf("endpoint status in %s: %v (%s)", pod, err, stderr)
		}
		var st []struct {
			Status struct {
				Header struct {
					MemberID uint64 `json:"member_id"`
				} `json:"header"`
			} `json:"Status"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || len(st) != 1 {
			t.Fatalf("endpoint status in %s: %v: %q", pod, err, out)
		}
		ids[pod] = st[0].Status.Header.MemberID
	}
	out, _, err = env.exec(ctx, "etcd-1", append(runbookEtcdctl, "member", "list", "-w", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var members struct {
		Members []struct {
			ID   uint64 `json:"ID"`
			Name string `json:"name"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &members); err != nil {
		t.Fatal(err)
	}
	if len(members.Members) != 3 {
		t.Fatalf("member list has %d members, want 3", len(members.Members))
	}
	for _, m := range members.Members {
		if ids[m.Name] != m.ID {
			t.Errorf("localhost:2379 in pod %s is member %x, want %x (its own)", m.Name, ids[m.Name], m.ID)
		}
	}
	if ids["etcd-0"] == ids["etcd-1"] {
		t.Fatalf("etcd-1 reaches etcd-0's member %x", ids["etcd-0"])
	}
	// A failing command's exit status comes back through the apiserver.
	if _, _, err := env.exec(ctx, "etcd-0", "sh", "-c", "exit 3"); err == nil || !strings.Contains(err.Error(), "status 3") {
		t.Fatalf("exit 3 came back as %v", err)
	}
}

// TestEtcdIsHyperShiftShaped checks the hosted etcd against HyperShift's
// layout where hcpsnap depends on it: the StatefulSet's members, the data
// volume (a claim bound to a volume, mounted at /var/lib as a file system of
// the volume's size, so that a snapshot that does not fit has no room), the
// serving certificate (no IP address) and the Secrets.
func TestEtcdIsHyperShiftShaped(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	sts, err := env.kube.AppsV1().StatefulSets(env.hcpNamespace).Get(ctx, "etcd", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sts.Spec.ServiceName != "etcd-discovery" || *sts.Spec.Replicas != 3 || sts.Status.ReadyReplicas != 3 {
		t.Fatalf("statefulset etcd: service %s, %d replicas, %d ready", sts.Spec.ServiceName, *sts.Spec.Replicas, sts.Status.ReadyReplicas)
	}
	pod, err := env.kube.CoreV1().Pods(env.hcpNamespace).Get(ctx, "etcd-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var containers []string
	for _, c := range pod.Spec.Containers {
		containers = append(containers, c.Name)
	}
	if strings.Join(containers, ",") != "etcd,etcd-metrics,healthz" || len(pod.OwnerReferences) != 1 || pod.OwnerReferences[0].Kind != "StatefulSet" {
		t.Fatalf("etcd-0: containers %v, owners %v", containers, pod.OwnerReferences)
	}
	pvc, err := env.kube.CoreV1().PersistentVolumeClaims(env.hcpNamespace).Get(ctx, "data-etcd-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pv, err := env.kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("claim data-etcd-0 (%s): %v", pvc.Status.Phase, err)
	}
	capacity := pv.Spec.Capacity["storage"]

	out, stderr, err := env.exec(ctx, "etcd-0", "df", "-B1", "--output=size,avail", "/var/lib")
	if err != nil {
		t.Fatalf("df in etcd-0: %v %s", err, stderr)
	}
	var size, avail int64
	if fields := strings.Fields(out); len(fields) != 4 {
		t.Fatalf("df: %q", out)
	} else {
		_, err1 := fmt.Sscan(fields[2], &size)
		_, err2 := fmt.Sscan(fields[3], &avail)
		if err1 != nil || err2 != nil {
			t.Fatalf("df: %q", out)
		}
	}
	if size > capacity.Value() || size < capacity.Value()*9/10 {
		t.Fatalf("/var/lib holds %d bytes, the volume %s", size, capacity.String())
	}
	// A full volume is not tried here: etcd shares it and would fail its own
	// writes. nodeagent's TestEnsureFilesystem proves such a file system
	// refuses what does not fit, and hcpsnap's preflight reads this df.
	if avail <= 0 || avail >= size {
		t.Fatalf("/var/lib: %d of %d bytes free", avail, size)
	}

	secret, err := env.kube.CoreV1().Secrets(env.hcpNamespace).Get(ctx, "etcd-client-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(secret.Data) != 2 || secret.Data["etcd-client.crt"] == nil || secret.Data["etcd-client.key"] == nil {
		t.Errorf("etcd-client-tls holds %d keys, want the certificate and key only", len(secret.Data))
	}
	out, _, err = env.exec(ctx, "etcd-0", "cat", "/etc/etcd/tls/server/server.crt")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(out))
	if block == nil {
		t.Fatalf("server.crt: %q", out)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.IPAddresses) != 0 || cert.VerifyHostname("localhost") != nil || cert.VerifyHostname("etcd-client."+env.hcpNamespace+".svc") != nil {
		t.Errorf("server certificate: IPs %v, DNS %v", cert.IPAddresses, cert.DNSNames)
	}
}

func TestScaleToZeroAndBack(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	const name = "openshift-oauth-apiserver"
	pauseFor(t, env, 10*time.Minute) // keep the operator stand-in away
	want := env.scale(t, name, 0)
	env.waitPods(t, name, 0)
	env.scale(t, name, want)
	env.waitReady(t, name, want)
	_ = ctx
}

func TestOperatorStandIn(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	const name = "openshift-apiserver"

	t.Run("without a pause a scale-down is undone", func(t *testing.T) {
		setPausedUntil(t, env, nil)
		want := env.scale(t, name, 0)
		waitReplicas(t, env, name, want, 30*time.Second)
		env.waitReady(t, name, want)
	})

	t.Run("with a pause the scale-down holds until the deadline", func(t *testing.T) {
		deadline := time.Now().Add(20 * time.Second).UTC().Format(time.RFC3339)
		setPausedUntil(t, env, &deadline)
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			hcp, err := env.hyper.GetHostedControlPlane(ctx, env.hcpNamespace, env.cluster)
			return err == nil && hcp.Spec.PausedUntil != nil && *hcp.Spec.PausedUntil == deadline, nil
		})
		if err != nil {
			t.Fatalf("the HostedControlPlane never showed pausedUntil %s", deadline)
		}
		want := env.scale(t, name, 0)
		// Well before the deadline the stand-in must leave it at 0.
		time.Sleep(5 * time.Second)
		if got := env.replicas(t, name); got != 0 {
			t.Fatalf("replicas %d while paused, want 0", got)
		}
		// After the deadline, reconciliation brings the API back by itself.
		waitReplicas(t, env, name, want, 45*time.Second)
		env.waitReady(t, name, want)
		setPausedUntil(t, env, nil)
	})
}

func TestS3ChecksSignatures(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	good := env.s3Client(env.vars["AWS_SECRET_ACCESS_KEY"])
	key := fmt.Sprintf("e2e/signature-%d.txt", time.Now().UnixNano())
	if _, err := good.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(env.bucket), Key: aws.String(key), Body: strings.NewReader("hello")}); err != nil {
		t.Fatalf("a good signature was refused: %v", err)
	}
	defer good.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(env.bucket), Key: aws.String(key)})

	bad := env.s3Client("not-the-secret-key")
	_, err := bad.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(env.bucket), Key: aws.String(key)})
	if err == nil || !strings.Contains(err.Error(), "SignatureDoesNotMatch") {
		t.Fatalf("a wrong signature got %v, want SignatureDoesNotMatch", err)
	}

	presign := s3.NewPresignClient(good)
	req, err := presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(env.bucket), Key: aws.String(key)}, s3.WithPresignExpires(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if body, status := httpGet(t, req.URL); status != http.StatusOK || body != "hello" {
		t.Fatalf("a good presigned URL got %d %q", status, body)
	}
	short, err := presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(env.bucket), Key: aws.String(key)}, s3.WithPresignExpires(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if _, status := httpGet(t, short.URL); status != http.StatusForbidden {
		t.Fatalf("an expired presigned URL got %d, want 403", status)
	}
	tampered := strings.Replace(req.URL, "X-Amz-Signature=", "X-Amz-Signature=0", 1)
	if _, status := httpGet(t, tampered); status != http.StatusForbidden {
		t.Fatalf("a tampered presigned URL got %d, want 403", status)
	}
}

// ---------------------------------------------------------------------------

func (e *testEnv) s3Client(secret string) *s3.Client {
	return s3.New(s3.Options{
		Region:       e.vars["AWS_REGION"],
		BaseEndpoint: aws.String(e.vars["AWS_ENDPOINT_URL_S3"]),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(e.vars["AWS_ACCESS_KEY_ID"], secret, ""),
	})
}

func httpGet(t *testing.T, url string) (string, int) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

func (e *testEnv) exec(ctx context.Context, pod string, cmd ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	err := e.executor.Exec(ctx, e.hcpNamespace, pod, "etcd", cmd, nil, &out, &errOut)
	return out.String(), errOut.String(), err
}

// scale sets a Deployment's replicas and returns the previous value.
func (e *testEnv) scale(t *testing.T, name string, replicas int32) int32 {
	t.Helper()
	ctx := context.Background()
	d := e.kube.AppsV1().Deployments(e.hcpNamespace)
	s, err := d.GetScale(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	prev := s.Spec.Replicas
	s.Spec.Replicas = replicas
	if _, err := d.UpdateScale(ctx, name, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return prev
}

func (e *testEnv) replicas(t *testing.T, name string) int32 {
	t.Helper()
	s, err := e.kube.AppsV1().Deployments(e.hcpNamespace).GetScale(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Spec.Replicas
}

func waitReplicas(t *testing.T, e *testEnv, name string, want int32, timeout time.Duration) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return e.replicas(t, name) == want, nil
	})
	if err != nil {
		t.Fatalf("Deployment %s never got back to %d replicas (now %d)", name, want, e.replicas(t, name))
	}
}

func (e *testEnv) pods(t *testing.T, deployment string) (all, ready int) {
	t.Helper()
	ctx := context.Background()
	d, err := e.kube.AppsV1().Deployments(e.hcpNamespace).Get(ctx, deployment, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := e.kube.CoreV1().Pods(e.hcpNamespace).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(d.Spec.Selector.MatchLabels).String()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		if podutils.IsPodReady(&pods.Items[i]) {
			ready++
		}
	}
	return len(pods.Items), ready
}

func (e *testEnv) waitPods(t *testing.T, deployment string, want int) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		all, _ := e.pods(t, deployment)
		return all == want, nil
	})
	if err != nil {
		all, _ := e.pods(t, deployment)
		t.Fatalf("Deployment %s has %d pods, want %d", deployment, all, want)
	}
}

func (e *testEnv) waitReady(t *testing.T, deployment string, want int32) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		all, ready := e.pods(t, deployment)
		return all == int(want) && ready == int(want), nil
	})
	if err != nil {
		all, ready := e.pods(t, deployment)
		t.Fatalf("Deployment %s has %d pods, %d Ready; want %d Ready", deployment, all, ready, want)
	}
}

func setPausedUntil(t *testing.T, e *testEnv, v *string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"pausedUntil": v}})
	if _, err := e.hyper.PatchHostedCluster(context.Background(), e.namespace, e.cluster, patch); err != nil {
		t.Fatal(err)
	}
}

// pauseFor pauses reconciliation for d and unpauses when the test ends.
func pauseFor(t *testing.T, e *testEnv, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d).UTC().Format(time.RFC3339)
	setPausedUntil(t, e, &deadline)
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		hcp, err := e.hyper.GetHostedControlPlane(ctx, e.hcpNamespace, e.cluster)
		return err == nil && hcp.Spec.PausedUntil != nil && *hcp.Spec.PausedUntil == deadline, nil
	})
	if err != nil {
		t.Fatal("the pause never reached the HostedControlPlane")
	}
	t.Cleanup(func() { setPausedUntil(t, e, nil) })
}
