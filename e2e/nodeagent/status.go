package nodeagent

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// exitRecord is one finished run of a container.
type exitRecord struct {
	ExitCode   int32
	Signal     int32
	StartedAt  time.Time
	FinishedAt time.Time
}

// containerSnapshot is what the agent knows of one container at a moment; status is computed from it.
type containerSnapshot struct {
	Name string
	// Running is true while the process runs, and always for a container without a command once the pod started.
	Running   bool
	StartedAt time.Time
	// ProbeReady is the readiness probe's verdict, true when the container has no readiness probe.
	ProbeReady   bool
	RestartCount int32
	// LastExit is the previous run, when there was one.
	LastExit *exitRecord
	// Final is set when the container exited and will not be restarted.
	Final bool
	// Waiting is the reason of a container that does not run: ContainerCreating, PodInitializing or
	// CrashLoopBackOff.
	Waiting string
	Message string
}

// podSnapshot is what the agent knows of a pod at a moment.
type podSnapshot struct {
	PodIP, HostIP  string
	StartTime      time.Time
	InitContainers []containerSnapshot
	Containers     []containerSnapshot
	InitDone       bool
}

// computeStatus derives a pod's status from the agent's snapshot, keeping the fields it does not own (qosClass,
// other conditions). Times are cut to seconds, the precision the API
// keeps, and conditions keep their transition time while their status does not change, so that an unchanged pod
// yields an equal status and no write.
func computeStatus(pod *corev1.Pod, snap podSnapshot, now time.Time) corev1.PodStatus {
	st := *pod.Status.DeepCopy()
	st.HostIP, st.PodIP, st.HostIPs, st.PodIPs, st.StartTime = snap.HostIP, snap.PodIP, nil, nil, nil
	st.InitContainerStatuses, st.ContainerStatuses = nil, nil
	if snap.HostIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: snap.HostIP}}
	}
	if snap.PodIP != "" {
		st.PodIPs = []corev1.PodIP{{IP: snap.PodIP}}
	}
	if !snap.StartTime.IsZero() {
		t := secTime(snap.StartTime)
		st.StartTime = &t
	}
	for i, c := range pod.Spec.InitContainers {
		if i < len(snap.InitContainers) {
			st.InitContainerStatuses = append(st.InitContainerStatuses, containerStatus(c, snap.InitContainers[i], pod, true))
		}
	}
	allReady := len(pod.Spec.Containers) > 0 && snap.InitDone
	for i, c := range pod.Spec.Containers {
		cs := containerSnapshot{Name: c.Name, Waiting: "ContainerCreating"}
		if !snap.InitDone {
			cs.Waiting = "PodInitializing"
		}
		if i < len(snap.Containers) {
			cs = snap.Containers[i]
		}
		s := containerStatus(c, cs, pod, false)
		allReady = allReady && s.Ready
		st.ContainerStatuses = append(st.ContainerStatuses, s)
	}
	st.Phase = podPhase(pod, snap)
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		allReady = false
	}
	conds := []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
		{Type: corev1.PodInitialized, Status: boolCondition(snap.InitDone)},
		{Type: corev1.ContainersReady, Status: boolCondition(allReady)},
		{Type: corev1.PodReady, Status: boolCondition(allReady)},
	}
	for i := range conds {
		conds[i].LastTransitionTime = secTime(now)
		for _, old := range pod.Status.Conditions {
			if old.Type == conds[i].Type && old.Status == conds[i].Status {
				conds[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	for _, old := range pod.Status.Conditions {
		switch old.Type {
		case corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady:
		default:
			conds = append(conds, old)
		}
	}
	st.Conditions = conds
	return st
}

func boolCondition(b bool) corev1.ConditionStatus {
	if b {
		return corev1.ConditionTrue
	}
	return corev1.ConditionFalse
}

func secTime(t time.Time) metav1.Time {
	return metav1.NewTime(t.Truncate(time.Second))
}

// containerStatus renders one container's status.
func containerStatus(c corev1.Container, s containerSnapshot, pod *corev1.Pod, isInit bool) corev1.ContainerStatus {
	started := s.Running
	cs := corev1.ContainerStatus{
		Name:         c.Name,
		Image:        c.Image,
		ImageID:      c.Image,
		RestartCount: s.RestartCount,
		Started:      &started,
		Ready:        s.Running && s.ProbeReady && !isInit,
	}
	if s.Running || s.LastExit != nil {
		cs.ContainerID = fmt.Sprintf("hcpsnap://%s/%s/%d", pod.UID, c.Name, s.RestartCount)
	}
	switch {
	case s.Running:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: secTime(s.StartedAt)}
		if s.LastExit != nil {
			cs.LastTerminationState.Terminated = terminated(s.LastExit)
		}
	case s.Final && s.LastExit != nil:
		cs.State.Terminated = terminated(s.LastExit)
		if isInit && s.LastExit.ExitCode == 0 {
			cs.Ready = true
		}
	default:
		reason := s.Waiting
		if reason == "" {
			reason = "ContainerCreating"
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: s.Message}
		if s.LastExit != nil {
			cs.LastTerminationState.Terminated = terminated(s.LastExit)
		}
	}
	return cs
}

func terminated(e *exitRecord) *corev1.ContainerStateTerminated {
	reason := "Completed"
	if e.ExitCode != 0 {
		reason = "Error"
	}
	return &corev1.ContainerStateTerminated{
		ExitCode:   e.ExitCode,
		Signal:     e.Signal,
		Reason:     reason,
		StartedAt:  secTime(e.StartedAt),
		FinishedAt: secTime(e.FinishedAt),
	}
}

// podPhase follows the kubelet's rules: Pending until the init containers are done and every container has run
// once; Running while a container runs or will be restarted; Succeeded or Failed once all exited for good.
func podPhase(pod *corev1.Pod, snap podSnapshot) corev1.PodPhase {
	if !snap.InitDone {
		for _, ic := range snap.InitContainers {
			if ic.Final && ic.LastExit != nil && ic.LastExit.ExitCode != 0 {
				return corev1.PodFailed
			}
		}
		return corev1.PodPending
	}
	if len(snap.Containers) < len(pod.Spec.Containers) {
		return corev1.PodPending
	}
	var running, waiting, succeeded, failed int
	for _, c := range snap.Containers {
		switch {
		case c.Running:
			running++
		case c.Final && c.LastExit != nil && c.LastExit.ExitCode == 0:
			succeeded++
		case c.Final:
			failed++
		case c.LastExit == nil:
			waiting++
		default:
			running++ // exited, waiting for its restart
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case failed > 0:
		return corev1.PodFailed
	default:
		return corev1.PodSucceeded
	}
}
