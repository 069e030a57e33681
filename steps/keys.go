package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hcpsnap/hcpsnap/internal/fsutil"
	"github.com/hcpsnap/hcpsnap/internal/version"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/s3"
)

// ControlPlaneSecrets are the Secrets of the hosted control plane namespace
// that HyperShift's own automated backup bundles with the AES key: without
// them a restored etcd holds data signed by keys the new cluster lacks.
var ControlPlaneSecrets = []string{"root-ca", "etcd-signer", "sa-signing-key"}

// secretRef is a Secret the key bundle holds, with its role.
type secretRef struct {
	Namespace, Name, Role string
	Required              bool
}

// keySecrets lists the Secrets of the key bundle: the AES keys named by the
// HostedCluster (required when set) and the control plane's signing Secrets
// (saved when present), and returns what the HostedCluster says of its
// secret encryption (nil when it says nothing hcpsnap can read).
//
// A secret encryption hcpsnap cannot read (a KMS provider newer than its
// HyperShift API, say) does not fail the backup: the snapshot is still
// good, and the manifest simply has no encryption section, so that restore
// accepts no KMS render for it rather than a wrong one.
func keySecrets(ctx context.Context, s *State) ([]secretRef, *manifest.Encryption, error) {
	hc, err := s.Clients.HyperShift.GetHostedCluster(ctx, s.Opts.Namespace, s.Opts.Cluster)
	if err != nil {
		return nil, nil, err
	}
	encryption, err := manifest.EncryptionFromSpec(hc.Spec.SecretEncryption)
	if err != nil {
		log(ctx).Warn("the HostedCluster's secret encryption is not recorded in the manifest; hcpsnap restore will refuse a KMS render for this backup",
			"reason", err.Error())
		encryption = nil
	}
	var refs []secretRef
	if enc := hc.Spec.SecretEncryption; enc != nil && enc.AESCBC != nil {
		refs = append(refs, secretRef{s.Opts.Namespace, enc.AESCBC.ActiveKey.Name, manifest.RoleActiveKey, true})
		if enc.AESCBC.BackupKey != nil && enc.AESCBC.BackupKey.Name != "" {
			refs = append(refs, secretRef{s.Opts.Namespace, enc.AESCBC.BackupKey.Name, manifest.RoleBackupKey, true})
		}
	}
	for _, n := range ControlPlaneSecrets {
		refs = append(refs, secretRef{s.Out.HCPNamespace, n, manifest.RoleControlPlane, false})
	}
	return refs, encryption, nil
}

func saveKeys(ctx context.Context, s *State) error {
	refs, encryption, err := keySecrets(ctx, s)
	if err != nil {
		return err
	}
	s.Out.Encryption = encryption
	switch {
	case encryption != nil && encryption.KMS != nil:
		active := encryption.KMS.ActiveKey()
		log(ctx).Info("the HostedCluster encrypts Secrets with KMS: there is no AES key to save; the manifest records the KMS keys a restore must name",
			"provider", encryption.KMS.Provider, "activeKey", active.ID, "kmsKeys", len(encryption.KMS.Keys))
	case len(refs) == 0 || refs[0].Role != manifest.RoleActiveKey:
		log(ctx).Warn("the HostedCluster has no aescbc secretEncryption: the key bundle holds no AES key")
	}
	var secrets []corev1.Secret
	s.Out.SecretsSaved = nil
	for _, ref := range refs {
		sec, err := s.Clients.Kube.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && !ref.Required {
			log(ctx).Warn("Secret not found; not saved", "secret", ref.Namespace+"/"+ref.Name)
			continue
		}
		if err != nil {
			return fmt.Errorf("read Secret %s/%s: %w", ref.Namespace, ref.Name, err)
		}
		if sec.Annotations == nil {
			sec.Annotations = map[string]string{}
		}
		sec.Annotations[manifest.RoleAnnotation] = ref.Role
		secrets = append(secrets, *sec)
		s.Out.SecretsSaved = append(s.Out.SecretsSaved, ref.Namespace+"/"+ref.Name)
	}
	data, err := json.MarshalIndent(manifest.NewKeyBundle(secrets), "", "  ")
	if err != nil {
		return err
	}
	if s.Opts.KeyOut != "" {
		p, err := filepath.Abs(s.Opts.KeyOut)
		if err != nil {
			return err
		}
		if err := fsutil.WriteFileAtomic(p, data, 0o600); err != nil {
			return fmt.Errorf("--key-out: %w", err)
		}
		s.Out.KeyBundleFile = p
		log(ctx).Info("key bundle written", "file", p, "secrets", len(secrets))
		return nil
	}
	key := objectKey(s.Opts.KeyPrefix, s.Opts.Cluster, s.Out.Timestamp, keyBundleObjectName)
	err = s.Clients.Store.Put(ctx, key, data, s3.PutOptions{
		ContentType: "application/json",
		SSE:         s.Opts.SSE,
		SSEKMSKeyID: s.Opts.SSEKMSKeyID,
		Metadata:    map[string]string{manifest.MetaRunID: s.Run.RunID},
	})
	if err != nil {
		return fmt.Errorf("store key bundle %s: %w", key, err)
	}
	s.Out.KeyBundleKey = key
	log(ctx).Info("key bundle stored", "key", key, "secrets", len(secrets), "sse", s.Opts.SSE)
	return nil
}

// BuildManifest returns the manifest of the run's backup from its outputs:
// the snapshot, its object and etcd's figures all come from the one current
// attempt, so the manifest describes exactly the object it names.
func BuildManifest(s *State) *manifest.Manifest {
	o := s.Out
	a := o.Attempt
	if a == nil {
		a = &Attempt{}
	}
	m := &manifest.Manifest{
		SchemaVersion:    manifest.SchemaVersion,
		RunID:            s.Run.RunID,
		Cluster:          s.Opts.Cluster,
		Namespace:        s.Opts.Namespace,
		HCPNamespace:     o.HCPNamespace,
		InfraID:          o.InfraID,
		OpenShiftVersion: o.OpenShiftVersion,
		Online:           s.Opts.Online,
		Snapshot:         manifest.Object{Bucket: s.Opts.Bucket, Key: a.ObjectKey, Size: a.Bytes, SHA256: a.SHA256},
		KeyBundle: manifest.KeyBundle{Bucket: s.Opts.Bucket, Key: o.KeyBundleKey, File: o.KeyBundleFile,
			SSE: s.Opts.SSE, Secrets: o.SecretsSaved},
		Times: manifest.Times{Started: s.Run.StartedAt, SnapshotSaved: a.SavedAt, DowntimeStart: o.DowntimeStart,
			DowntimeEnd: o.DowntimeEnd, Uploaded: a.UploadEnd, Finished: s.now().UTC()},
		HCPSnapVersion: version.Get().Version,
		Via:            a.Via,
		Encryption:     o.Encryption,
		MissingShards:  o.MissingShards,
	}
	for _, w := range o.downtimes() {
		sec := w.End.Sub(w.Start).Seconds()
		m.Downtimes = append(m.Downtimes, manifest.Window{Start: w.Start, End: w.End, Seconds: sec})
		m.DowntimeSeconds += sec
	}
	if o.KeyBundleFile != "" {
		m.KeyBundle.Bucket, m.KeyBundle.SSE = "", ""
	}
	m.Etcd = manifestEtcd(s.Opts.Member, a)
	for _, sh := range o.Shards {
		sa := sh.Attempt
		if sa == nil {
			sa = &Attempt{}
		}
		m.Shards = append(m.Shards, manifest.ShardSnapshot{Shard: sh.Shard, Etcd: manifestEtcd(sh.Pod, sa),
			Snapshot: manifest.Object{Bucket: s.Opts.Bucket, Key: sa.ObjectKey, Size: sa.Bytes, SHA256: sa.SHA256}})
	}
	if len(m.Shards) > 0 {
		m.SchemaVersion = manifest.SchemaVersionShards
	}
	return m
}

// manifestEtcd is what etcd reported of an attempt's snapshot, taken in member.
func manifestEtcd(member string, a *Attempt) manifest.Etcd {
	if a.Status == nil {
		return manifest.Etcd{}
	}
	return manifest.Etcd{Member: member, Revision: a.Status.Revision, TotalKeys: a.Status.TotalKey,
		TotalSize: a.Status.TotalSize, Hash: a.Status.Hash, SHA256: a.EtcdSHA256, StorageVersion: a.Status.Version}
}

func writeManifest(ctx context.Context, s *State) error {
	if !s.Out.Attempt.Uploaded() {
		return fmt.Errorf("no complete upload of the current snapshot is recorded (object, size, SHA-256 and status): upload-snapshot has not completed for it")
	}
	for _, sh := range s.Out.Shards {
		if !sh.Attempt.Uploaded() {
			return fmt.Errorf("no complete upload of the snapshot of etcd shard %s is recorded (object, size, SHA-256 and status): upload-snapshot has not completed for it", sh.Shard.Name)
		}
	}
	m := BuildManifest(s)
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	key := objectKey(s.Opts.Prefix, s.Opts.Cluster, s.Out.Timestamp, manifestObjectName)
	if err := s.Clients.Store.Put(ctx, key, append(data, '\n'), s3.PutOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("store manifest %s: %w", key, err)
	}
	s.Out.ManifestKey = key
	return nil
}

// keyBundleDestination describes where the key bundle goes, for plans.
func keyBundleDestination(s *State) string {
	if s.Opts.KeyOut != "" {
		return "local file " + s.Opts.KeyOut + " (mode 0600)"
	}
	sse := s.Opts.SSE
	if sse == "" {
		sse = "the bucket's default encryption"
	}
	return fmt.Sprintf("s3://%s/%s (server-side encryption: %s)", s.Opts.Bucket,
		objectKey(s.Opts.KeyPrefix, s.Opts.Cluster, s.Out.Timestamp, keyBundleObjectName), sse)
}
