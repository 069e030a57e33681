//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Everything hcpsnap printed or wrote during the tests, for the final scan.
var (
	recordMu sync.Mutex
	recorded []string
)

// record keeps outputs of hcpsnap (stdout, stderr with its logs and JSON
// events, run files) for the secret scan that ends the test run.
func record(texts ...string) {
	recordMu.Lock()
	defer recordMu.Unlock()
	recorded = append(recorded, texts...)
}

// recordDir keeps every file under dir (run files, key files are excluded
// by the caller).
func recordDir(dir string) {
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if b, err := os.ReadFile(p); err == nil {
				record(string(b))
			}
		}
		return nil
	})
}

// TestMain runs the tests, then searches everything hcpsnap printed or
// wrote — stdout, stderr, logs, JSON events, run files, the run annotation
// and every manifest in the bucket — for the AES key, the AWS secret key,
// any Secret's data and presigned URL signatures.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := scanForSecrets(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: secret scan:", err)
			code = 1
		} else {
			fmt.Fprintf(os.Stderr, "secret scan: %d outputs of hcpsnap searched, no secret found\n", len(recorded))
		}
	}
	os.Exit(code)
}

func scanForSecrets() error {
	t := &testing.T{}
	env := loadEnv(t)
	ctx := context.Background()
	secrets := map[string]string{"the AWS secret key": env.vars["AWS_SECRET_ACCESS_KEY"]}
	for _, ns := range []string{env.namespace, env.hcpNamespace} {
		list, err := env.kube.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, s := range list.Items {
			for k, v := range s.Data {
				if len(v) < 8 {
					continue
				}
				name := fmt.Sprintf("data %q of Secret %s/%s", k, ns, s.Name)
				secrets[name] = string(v)
				secrets[name+" (base64)"] = base64.StdEncoding.EncodeToString(v)
			}
		}
	}
	texts := append([]string(nil), recorded...)
	if hc, err := env.hyper.GetHostedCluster(ctx, env.namespace, env.cluster); err == nil {
		for _, v := range hc.Annotations {
			texts = append(texts, v)
		}
	}
	client := env.s3Client(env.vars["AWS_SECRET_ACCESS_KEY"])
	for _, key := range env.listObjects(t, "") {
		if !strings.HasSuffix(key, "manifest.json") {
			continue
		}
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(env.bucket), Key: aws.String(key)})
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(out.Body)
		out.Body.Close()
		texts = append(texts, string(b))
	}
	for i, text := range texts {
		if strings.Contains(text, "X-Amz-Signature=") || strings.Contains(text, "X-Amz-Credential=") {
			return fmt.Errorf("output %d holds a presigned URL", i)
		}
		for what, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				return fmt.Errorf("output %d holds %s", i, what)
			}
		}
	}
	return nil
}
