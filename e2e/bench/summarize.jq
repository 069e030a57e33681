# Turns the raw runs of bench.sh (an array of {kind, size, run, ...}) into
# results.json: medians per size and way, ratios, and the targets met or missed.
# Kinds: stream, exec, exec-hold (--via exec --hold-api-until-saved),
# exec-refused, peer (the runbook), volume, and the limits limit-snapshot,
# limit-exec, limit-portforward, limit-upload. Runs recorded before --via
# existed (hcpsnap, hcpsnap-hold) are read as exec and exec-hold.
def median: sort | if length == 0 then null
  elif length % 2 == 1 then .[length / 2 | floor]
  else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def r(n): if . == null then null else (. * pow(10; n) | round) / pow(10; n) end;
# div(a; b): a / b, or null when either is missing or b is 0.
def div(a; b): if a == null or b == null or b == 0 then null else a / b end;
def mb(s): div(.bytes; s) | if . == null then null else . / 1e6 end;
# med(f): the median of f over the runs that have it, rounded.
def med(f): map(f | select(. != null)) | median | r(2);
def ratio(a; b): div(a; b) | r(2);

# fig: the figures of one way's backups.
def fig: {
  runs: length,
  downtimeSeconds: med(.downtime),
  downtimeFromEventsSeconds: med(.downtime_events),
  revisionFixedSeconds: med(.snapshot_save),
  endToEndSeconds: med(.e2e),
  snapshotToS3Seconds: med(.snapshot_to_s3),
  snapshotToS3MBps: med(mb(.snapshot_to_s3)),
  uploadSeconds: med(.upload),
  peakRSSMiB: med(.rss_kib / 1024),
  peakRSSMaxMiB: (map(.rss_kib / 1024) | max | r(2)),
  restoreVerifySeconds: med(.restore_verify)
};

# target(name; value; limit; met): one line of the targets; met is null when
# a figure is missing.
def target(name; value; limit; met):
  { target: name, value: value, limit: limit, met: (if value == null or limit == null then null else met end) };

map(.kind |= ({"hcpsnap": "exec", "hcpsnap-hold": "exec-hold"}[.] // .)) as $runs
| ($runs | map(select(.kind != "volume") | .size) | unique) as $sizes
| [ $sizes[] as $s
    | ($runs | map(select(.size == $s))) as $at
    | ($at | map(select(.kind == "stream"))) as $st
    | ($at | map(select(.kind == "exec"))) as $ex
    | ($at | map(select(.kind == "exec-hold"))) as $hh
    | ($at | map(select(.kind == "peer"))) as $p
    | ($at | map(select(.kind == "limit-upload"))) as $u
    | ($at | map(select(.kind == "limit-portforward"))) as $pf
    | ($at | map(select(.kind == "volume")) | first) as $vol
    | {
        sizeMiB: $s,
        runs: ($at | map(.run) | unique | map(select(. > 0)) | length),
        snapshotMB: ($st + $ex + $hh + $p | med(.bytes / 1e6)),
        volume: (if $vol == null then null else
          { freeMB: ($vol.free_bytes / 1e6 | r(2)), databaseMB: ($vol.db_bytes / 1e6 | r(2)), roomForCopy: ($vol.room == 1) } end),
        stream: ($st | fig),
        exec: (($ex | fig) + { refusedRuns: ($at | map(select(.kind == "exec-refused")) | length) }),
        hold: {
          runs: ($hh | length),
          downtimeSeconds: ($hh | med(.downtime)),
          snapshotSaveStepSeconds: ($hh | med(.snapshot_save)),
          endToEndSeconds: ($hh | med(.e2e)),
          uploadSeconds: ($hh | med(.upload)),
          uploadMBps: ($hh | med(mb(.upload))),
          peakRSSMaxMiB: ($hh | map(.rss_kib / 1024) | max | r(2))
        },
        peer: {
          runs: ($p | length),
          downtimeSeconds: ($p | med(.downtime)),
          snapshotSaveSeconds: ($p | med(.snapshot_save)),
          endToEndSeconds: ($p | med(.e2e)),
          uploadSeconds: ($p | med(.upload)),
          uploadMBps: ($p | med(mb(.upload))),
          snapshotToS3MBps: ($p | med(mb(.snapshot_save + .upload)))
        },
        limits: {
          snapshotSaveSeconds: ($at | map(select(.kind == "limit-snapshot")) | med(.seconds)),
          awsS3CpSeconds: ($u | med(.seconds)),
          awsS3CpMBps: ($u | med(mb(.seconds))),
          kubectlExecCatMBps: ($at | map(select(.kind == "limit-exec")) | med(mb(.seconds))),
          portForwardEtcdctlSeconds: ($pf | med(.seconds)),
          portForwardEtcdctlMBps: ($pf | med(mb(.seconds)))
        }
      }
    | .ratios = {
        streamEndToEndVsPeer: ratio(.stream.endToEndSeconds; .peer.endToEndSeconds),
        execEndToEndVsPeer: ratio(.exec.endToEndSeconds; .peer.endToEndSeconds),
        streamEndToEndVsExec: ratio(.stream.endToEndSeconds; .exec.endToEndSeconds),
        streamTransferVsPortForward: ratio(.stream.snapshotToS3MBps; .limits.portForwardEtcdctlMBps),
        execTransferVsPortForward: ratio(.exec.snapshotToS3MBps; .limits.portForwardEtcdctlMBps),
        streamDowntimeVsPeer: ratio(.stream.downtimeSeconds; .peer.downtimeSeconds),
        execDowntimeVsPeer: ratio(.exec.downtimeSeconds; .peer.downtimeSeconds),
        streamDowntimeVsExec: ratio(.stream.downtimeSeconds; .exec.downtimeSeconds),
        holdUploadVsAwsS3Cp: ratio(.hold.uploadMBps; .limits.awsS3CpMBps),
        peerUploadVsAwsS3Cp: ratio(.peer.uploadMBps; .limits.awsS3CpMBps)
      }
  ] as $bysize
| ($bysize | last) as $L
| {
    date: $date,
    machine: $machine,
    tools: $tools,
    hcpsnapVersion: $hcpsnap_version,
    sizes: $bysize,
    targets: ([
      # Issue 11: at 1 GiB (and, listed the same way, at every size measured).
      ($bysize[] | select(.stream.runs > 0)
        | target("stream: end-to-end at \(.sizeMiB) MiB <= 0.7 x the runbook's (ratio)";
            .ratios.streamEndToEndVsPeer; 0.7; .ratios.streamEndToEndVsPeer <= 0.7),
          target("stream: transfer rate at \(.sizeMiB) MiB >= 0.9 x etcdctl through kubectl port-forward (ratio)";
            .ratios.streamTransferVsPortForward; 0.9; .ratios.streamTransferVsPortForward >= 0.9),
          target("stream: API downtime at \(.sizeMiB) MiB unchanged, <= exec's + 0.5 s";
            .stream.downtimeSeconds; (if .exec.downtimeSeconds == null then null else .exec.downtimeSeconds + 0.5 | r(2) end);
            .stream.downtimeSeconds <= .exec.downtimeSeconds + 0.5),
          target("stream: peak RSS at \(.sizeMiB) MiB < 64 MiB (max of runs)";
            .stream.peakRSSMaxMiB; 64; .stream.peakRSSMaxMiB < 64)),
      (if ($bysize | map(select(.stream.runs > 0)) | length) == 0 then empty
       elif ($bysize | map(select(.stream.runs > 0)) | length) < 2 then
         target("stream: peak RSS flat across sizes (largest <= 1.2 x smallest)"; null; null; null)
       else
         ($bysize | map(select(.stream.runs > 0))) as $sb
         | target("stream: peak RSS flat from \($sb[0].sizeMiB) to \($sb[-1].sizeMiB) MiB (largest <= 1.2 x smallest)";
             $sb[-1].stream.peakRSSMiB; ($sb[0].stream.peakRSSMiB * 1.2 | r(2));
             $sb[-1].stream.peakRSSMiB <= $sb[0].stream.peakRSSMiB * 1.2)
       end),
      # The earlier targets of the exec way, kept to follow it over time.
      (if $L.exec.runs > 0 then
         target("exec: downtime at \($L.sizeMiB) MiB <= half of the runbook's";
           $L.exec.downtimeSeconds; div($L.peer.downtimeSeconds; 2) | r(2); $L.exec.downtimeSeconds <= $L.peer.downtimeSeconds / 2)
       else empty end),
      ($bysize[] | select(.exec.runs > 0)
        | target("exec: end-to-end at \(.sizeMiB) MiB no slower than the runbook";
            .exec.endToEndSeconds; .peer.endToEndSeconds; .exec.endToEndSeconds <= .peer.endToEndSeconds),
          target("exec: upload throughput at \(.sizeMiB) MiB (complete file) >= 80% of aws s3 cp (MB/s)";
            .hold.uploadMBps; (if .limits.awsS3CpMBps == null then null else .limits.awsS3CpMBps * 0.8 | r(2) end);
            .hold.uploadMBps >= .limits.awsS3CpMBps * 0.8),
          target("exec: peak RSS at \(.sizeMiB) MiB < 100 MiB (max of runs)";
            .exec.peakRSSMaxMiB; 100; .exec.peakRSSMaxMiB < 100)),
      # A way that refused where it should have worked is a finding, not a gap.
      ($bysize[] | select(.exec.refusedRuns > 0)
        | target("exec: refused at \(.sizeMiB) MiB only without room for a copy (runs refused)";
            .exec.refusedRuns; 0; (.volume.roomForCopy | not)))
    ]),
    raw: $runs
  }
