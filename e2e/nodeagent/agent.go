package nodeagent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/charmbracelet/log"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
)

const (
	// hostIP is the node's only address; every pod shares the host's network.
	hostIP = "127.0.0.1"
	// podPool is where pod IPs come from when a pod has no PodIPAnnotation.
	podPool = "127.0.1.0/24"
	// shutdownGrace is how long pod processes get between SIGTERM and SIGKILL when the agent stops.
	shutdownGrace = 5 * time.Second
	// resyncPeriod re-examines every pod now and then, so that a missed event or a failed write heals.
	resyncPeriod = 30 * time.Second
	// workers is the number of pods synchronised at the same time.
	workers = 2
	// uidFile records in a pod's folder the UID of the pod it belongs to: a new pod of the same name starts clean.
	uidFile = "uid"
)

// Config configures the node agent.
type Config struct {
	// Kubeconfig is the path of a kubeconfig with rights on nodes, leases, pods, bindings, secrets, configmaps and
	// service account tokens (an admin kubeconfig in the local environment).
	Kubeconfig string
	// NodeName is the name of the Node the agent registers and binds pods to, "hcpsnap-local" in the local
	// environment.
	NodeName string
	// Listen is the host:port of the kubelet API (TLS), "127.0.0.1:30250" in the local environment. Its port is
	// published in the Node's daemonEndpoints, where the apiserver finds it for pods/exec.
	Listen string
	// CertFile and KeyFile are the PEM serving certificate of the kubelet API and its key; the certificate needs the
	// IP SAN 127.0.0.1 for an apiserver started with --kubelet-certificate-authority.
	CertFile, KeyFile string
	// ClientCAFile, when set, makes the kubelet API require a client certificate signed by this CA: the one the
	// apiserver presents with --kubelet-client-certificate. /healthz stays open.
	ClientCAFile string
	// StateDir holds the agent's state: pod folders live under StateDir/pods/<namespace>/<name>/, unpacked images
	// under StateDir/images/<digest>/.
	StateDir string
	// ImageLayouts are OCI image layout folders. A container whose image is <anything>@sha256:<digest>, with a
	// digest that one of them lists, runs from that image (see sandboxRoot); any other container runs host binaries.
	// A folder that does not exist (yet) holds no image.
	ImageLayouts []string
	// Log receives the agent's logs; nil discards them.
	Log *log.Logger
}

// validate checks the configuration without I/O.
func (c Config) validate() error {
	var errs []error
	for name, v := range map[string]string{
		"Kubeconfig": c.Kubeconfig, "NodeName": c.NodeName, "Listen": c.Listen,
		"CertFile": c.CertFile, "KeyFile": c.KeyFile, "StateDir": c.StateDir,
	} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("listen: %w", err))
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return cmp.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// agent is the state of one Run.
type agent struct {
	cfg     Config
	log     *log.Logger
	ctx     context.Context
	client  kubernetes.Interface
	lister  corelisters.PodLister
	queue   workqueue.TypedRateLimitingInterface[string]
	ips     *ipPool
	volumes *volumeWriter
	hostIP  string
	selfExe string
	images  *imageStore
	// service is the in-cluster service environment of every container.
	service []envVar

	mu          sync.Mutex
	pods        map[string]*podRuntime
	terminating map[types.UID]bool
	background  sync.WaitGroup
}

// Run is the node agent: it registers the node, serves the kubelet API, binds pending pods to the node and runs
// the node's pods until ctx is cancelled. Then it stops every process it started (SIGTERM, SIGKILL after a few
// seconds), waits for them and returns; the pods themselves and their folders are left for the next run.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("node agent config: %w", err)
	}
	logger := cfg.Log
	if logger == nil {
		logger = log.New(io.Discard)
	}
	restConfig, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	restConfig.UserAgent = "hcpsnap-nodeagent/" + cfg.NodeName
	restConfig.QPS, restConfig.Burst = 50, 100
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	ips, err := newIPPool(podPool)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "pods"), 0o755); err != nil {
		return err
	}
	a := &agent{
		cfg:         cfg,
		log:         logger,
		ctx:         ctx,
		client:      client,
		queue:       workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		ips:         ips,
		hostIP:      hostIP,
		selfExe:     "/proc/self/exe",
		pods:        map[string]*podRuntime{},
		terminating: map[types.UID]bool{},
	}
	if a.service, err = serviceEnv(restConfig.Host); err != nil {
		return err
	}
	a.images = &imageStore{layouts: cfg.ImageLayouts, dir: filepath.Join(cfg.StateDir, "images")}
	objects := &apiObjects{ctx: ctx, client: client}
	claims := &claimResolver{client: client}
	a.volumes = &volumeWriter{objects: objects, token: a.requestToken, claim: claims.resolve}
	return a.run(ctx)
}

func (a *agent) run(ctx context.Context) error {
	// The pod lister exists before the kubelet API serves requests, which read it (port-forward); it is empty until
	// the informer has started and synced.
	factory := informers.NewSharedInformerFactory(a.client, resyncPeriod)
	podInformer := factory.Core().V1().Pods()
	a.lister = podInformer.Lister()
	srv, err := a.newServer()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("kubelet API: %w", err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	a.log.Info("kubelet API listening", "address", a.cfg.Listen)

	if err := a.registerNode(ctx); err != nil {
		return err
	}
	a.background.Add(1)
	go func() {
		defer a.background.Done()
		a.heartbeat(ctx)
	}()

	_, err = podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.enqueueObject,
		UpdateFunc: func(_, obj any) { a.enqueueObject(obj) },
		DeleteFunc: a.enqueueObject,
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced) {
		a.shutdown()
		return nil
	}
	a.collectStaleFolders()
	var workersDone sync.WaitGroup
	for range workers {
		workersDone.Add(1)
		go func() {
			defer workersDone.Done()
			for a.processNext(ctx) {
			}
		}()
	}
	a.log.Info("node agent running", "node", a.cfg.NodeName)
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("kubelet API: %w", err)
	}
	a.queue.ShutDown()
	workersDone.Wait()
	a.shutdown()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// shutdown stops every pod's processes and waits for them and the background goroutines.
func (a *agent) shutdown() {
	a.mu.Lock()
	pods := make([]*podRuntime, 0, len(a.pods))
	for _, rt := range a.pods {
		pods = append(pods, rt)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, rt := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rt.stop(shutdownGrace)
		}()
	}
	wg.Wait()
	a.background.Wait()
	a.log.Info("node agent stopped", "pods", len(pods))
}

func (a *agent) enqueueObject(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err == nil {
		a.queue.Add(key)
	}
}

// enqueue asks for a pod to be synchronised, which writes its status when it changed.
func (a *agent) enqueue(key string) {
	a.queue.Add(key)
}

func (a *agent) processNext(ctx context.Context) bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	if err := a.syncPod(ctx, key); err != nil {
		switch {
		case ctx.Err() != nil:
		case apierrors.IsConflict(err):
			// The cache had not seen our previous write yet; the retry reads the new version.
			a.log.Debug("sync pod", "pod", key, "err", err)
		default:
			a.log.Warn("sync pod", "pod", key, "err", err)
		}
		a.queue.AddRateLimited(key)
		return true
	}
	a.queue.Forget(key)
	return true
}

// runtime returns the running pod of a key, or nil.
func (a *agent) runtime(key string) *podRuntime {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pods[key]
}

// syncPod converges one pod: bind it when pending, start it when bound here, finish its deletion when it has a
// deletion timestamp, forget it when it is gone, and write its status.
func (a *agent) syncPod(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := a.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		a.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName == "" {
		return a.bind(ctx, pod)
	}
	if pod.Spec.NodeName != a.cfg.NodeName {
		a.forget(key)
		return nil
	}
	rt := a.runtime(key)
	if rt != nil && rt.uid != pod.UID {
		// The pod was replaced by a new one of the same name (a StatefulSet's): the old one is gone.
		a.forget(key)
		rt = nil
	}
	if pod.DeletionTimestamp != nil {
		a.terminate(pod, rt)
		return nil
	}
	if rt == nil {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return nil
		}
		if rt, err = a.startPod(ctx, pod); err != nil {
			if serr := a.writeStatus(ctx, pod, podSnapshot{HostIP: a.hostIP, PodIP: pod.Status.PodIP}); serr != nil {
				err = errors.Join(err, serr)
			}
			return fmt.Errorf("start pod: %w", err)
		}
	}
	return a.writeStatus(ctx, pod, rt.snapshot())
}

// writeStatus updates the pod's status when the snapshot changes it.
func (a *agent) writeStatus(ctx context.Context, pod *corev1.Pod, snap podSnapshot) error {
	status := computeStatus(pod, snap, time.Now())
	if equality.Semantic.DeepEqual(pod.Status, status) {
		return nil
	}
	updated := pod.DeepCopy()
	updated.Status = status
	_, err := a.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// bind assigns a pending pod of the default scheduler to this node.
func (a *agent) bind(ctx context.Context, pod *corev1.Pod) error {
	if pod.DeletionTimestamp != nil ||
		(pod.Spec.SchedulerName != "" && pod.Spec.SchedulerName != corev1.DefaultSchedulerName) {
		return nil
	}
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: a.cfg.NodeName},
	}
	err := a.client.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
	switch {
	case err == nil:
		a.log.Info("pod bound", "pod", pod.Namespace+"/"+pod.Name)
		return nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return nil // gone, or bound meanwhile: the next event tells
	default:
		return fmt.Errorf("bind: %w", err)
	}
}

// podDir is the folder of a pod.
func (a *agent) podDir(namespace, name string) string {
	return filepath.Join(a.cfg.StateDir, "pods", namespace, name)
}

// startPod prepares a pod's folder (volumes, hosts file) and starts its containers.
func (a *agent) startPod(ctx context.Context, pod *corev1.Pod) (*podRuntime, error) {
	key := pod.Namespace + "/" + pod.Name
	dir := a.podDir(pod.Namespace, pod.Name)
	if old, err := os.ReadFile(filepath.Join(dir, uidFile)); err != nil || string(old) != string(pod.UID) {
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{filepath.Join(dir, "volumes"), filepath.Join(dir, "scratch")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, uidFile), []byte(pod.UID), 0o644); err != nil {
		return nil, err
	}
	annotated, peers, err := annotatedIP(pod)
	if err != nil {
		return nil, err
	}
	ip, err := a.ips.assign(pod.UID, annotated, pod.Status.PodIP)
	if err != nil {
		return nil, err
	}
	hostsFile := filepath.Join(dir, "hosts")
	hosts := renderHosts(hostsSpec{
		PodIP: ip, Localhost: localhostFor(ip), Hostname: hostnameFor(pod),
		Subdomain: pod.Spec.Subdomain, Namespace: pod.Namespace, Peers: peers,
		NodeIP: a.hostIP, NodeName: a.cfg.NodeName, Aliases: pod.Spec.HostAliases,
	})
	if err := os.WriteFile(hostsFile, []byte(hosts), 0o644); err != nil {
		return nil, err
	}
	volumes, err := a.volumes.prepareVolumes(ctx, pod, filepath.Join(dir, "volumes"))
	if err != nil {
		return nil, err
	}
	rtCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	rt := &podRuntime{
		a: a, key: key, uid: pod.UID, name: pod.Name, namespace: pod.Namespace, dir: dir, ip: ip,
		ctx: rtCtx, cancel: cancel, pod: pod.DeepCopy(), startTime: time.Now(), procs: map[int]struct{}{},
	}
	if pod.Status.StartTime != nil {
		rt.startTime = pod.Status.StartTime.Time
	}
	restarts := map[string]int32{}
	for _, cs := range append(append([]corev1.ContainerStatus{}, pod.Status.ContainerStatuses...), pod.Status.InitContainerStatuses...) {
		restarts[cs.Name] = cs.RestartCount
	}
	build := func(c corev1.Container) (*containerRun, error) {
		img, err := a.images.lookup(c.Image)
		if err != nil {
			return nil, fmt.Errorf("container %s: image %s: %w", c.Name, c.Image, err)
		}
		env, err := containerEnv(pod, &c, baseEnv(img, a.service), ip, a.hostIP, a.volumes.objects)
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.Name, err)
		}
		mounts, err := containerMounts(&c, volumes, hostsFile)
		if err != nil {
			return nil, err
		}
		cr := &containerRun{spec: c, env: env, mounts: mounts, workingDir: c.WorkingDir, snap: containerSnapshot{
			Name: c.Name, Waiting: "ContainerCreating", RestartCount: restarts[c.Name],
		}}
		cr.argv = hostCommand(&c)
		if img != nil {
			cr.argv = imageCommand(&c, img.Config)
			if cr.workingDir == "" {
				cr.workingDir = img.Config.WorkingDir
			}
			user, err := runAs(pod, &c, img.Config.User, img.RootFS)
			if err != nil {
				return nil, fmt.Errorf("container %s: %w", c.Name, err)
			}
			cr.root = &sandboxRoot{RootFS: img.RootFS, ReadOnly: readOnlyRoot(&c), User: user}
			a.log.Info("container runs from image", "pod", key, "container", c.Name, "digest", img.Digest,
				"uid", user.UID, "gid", user.GID, "readOnlyRoot", cr.root.ReadOnly)
		}
		return cr, nil
	}
	for _, c := range pod.Spec.InitContainers {
		cr, err := build(c)
		if err != nil {
			cancel()
			return nil, err
		}
		rt.init = append(rt.init, cr)
	}
	for _, c := range pod.Spec.Containers {
		cr, err := build(c)
		if err != nil {
			cancel()
			return nil, err
		}
		rt.containers = append(rt.containers, cr)
	}
	a.mu.Lock()
	a.pods[key] = rt
	a.mu.Unlock()
	a.log.Info("pod starting", "pod", key, "ip", ip)
	rt.start()
	return rt, nil
}

// terminate finishes the graceful deletion of a pod, once: stop its processes within the grace period, then
// delete it with grace period 0 and its UID as precondition, as a kubelet does.
func (a *agent) terminate(pod *corev1.Pod, rt *podRuntime) {
	a.mu.Lock()
	if a.terminating[pod.UID] {
		a.mu.Unlock()
		return
	}
	a.terminating[pod.UID] = true
	a.mu.Unlock()
	grace := 30 * time.Second
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	key := pod.Namespace + "/" + pod.Name
	a.log.Info("pod terminating", "pod", key, "grace", grace)
	a.background.Add(1)
	go func() {
		defer a.background.Done()
		if rt != nil {
			rt.stop(grace)
		}
		zero := int64(0)
		uid := pod.UID
		opts := metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}}
		for attempt := 0; ; attempt++ {
			err := a.client.CoreV1().Pods(pod.Namespace).Delete(a.ctx, pod.Name, opts)
			if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) || a.ctx.Err() != nil {
				a.log.Info("pod deleted", "pod", key)
				break
			}
			a.log.Warn("delete pod", "pod", key, "err", err)
			select {
			case <-a.ctx.Done():
			case <-time.After(time.Second << min(attempt, 4)):
			}
		}
		a.mu.Lock()
		delete(a.terminating, uid)
		a.mu.Unlock()
	}()
}

// forget stops what runs for a pod that is gone from this node, removes its folder and frees its IP.
func (a *agent) forget(key string) {
	a.mu.Lock()
	rt := a.pods[key]
	delete(a.pods, key)
	a.mu.Unlock()
	if rt == nil {
		return
	}
	rt.stop(0)
	a.ips.release(rt.uid)
	if err := os.RemoveAll(rt.dir); err != nil {
		a.log.Warn("remove pod folder", "pod", key, "err", err)
	}
	a.log.Info("pod removed", "pod", key)
}

// collectStaleFolders removes the folders of pods deleted while the agent was not running.
func (a *agent) collectStaleFolders() {
	root := filepath.Join(a.cfg.StateDir, "pods")
	namespaces, _ := os.ReadDir(root)
	for _, ns := range namespaces {
		pods, _ := os.ReadDir(filepath.Join(root, ns.Name()))
		for _, p := range pods {
			pod, err := a.lister.Pods(ns.Name()).Get(p.Name())
			if err == nil && pod.Spec.NodeName == a.cfg.NodeName {
				continue
			}
			dir := filepath.Join(root, ns.Name(), p.Name())
			a.log.Info("removing folder of a pod that is gone", "dir", dir)
			_ = os.RemoveAll(dir)
		}
	}
}

// requestToken asks the apiserver for a service account token for a projected volume.
func (a *agent) requestToken(ctx context.Context, namespace, sa string, req *authenticationv1.TokenRequest) (string, error) {
	resp, err := a.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return resp.Status.Token, nil
}

// apiObjects reads Secrets and ConfigMaps from the apiserver.
type apiObjects struct {
	ctx    context.Context
	client kubernetes.Interface
}

var _ objectSource = (*apiObjects)(nil)

func (o *apiObjects) secret(namespace, name string) (map[string][]byte, error) {
	s, err := o.client.CoreV1().Secrets(namespace).Get(o.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{}
	for k, v := range s.StringData {
		data[k] = []byte(v)
	}
	for k, v := range s.Data {
		data[k] = v
	}
	return data, nil
}

func (o *apiObjects) configMap(namespace, name string) (map[string]string, error) {
	cm, err := o.client.CoreV1().ConfigMaps(namespace).Get(o.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	data := map[string]string{}
	for k, v := range cm.BinaryData {
		data[k] = string(v)
	}
	for k, v := range cm.Data {
		data[k] = v
	}
	return data, nil
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// sortedKeys returns the keys of m in order, so that files and variables come out the same every time.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
