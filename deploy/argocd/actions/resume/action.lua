-- Scheduling resumes with the next scheduled time: times that passed while the
-- task was suspended (or stopped after failures) are not caught up. A task
-- stopped by spec.stopAfterConsecutiveFailures starts again on a new value of
-- the taskmaster.dev/resume annotation: the request time, as run-now's.
obj.spec.suspend = false
if obj.status ~= nil and obj.status.phase == "Stopped" then
  if obj.metadata.annotations == nil then
    obj.metadata.annotations = {}
  end
  obj.metadata.annotations["taskmaster.dev/resume"] = "argocd-" .. os.date("!%Y%m%dT%H%M%SZ")
end
return obj
