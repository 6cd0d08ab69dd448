-- Scheduling resumes with the next scheduled time: times that passed while the
-- task was suspended (or stopped after failures) are not caught up. A task
-- stopped by spec.stopAfterConsecutiveFailures (its Ready condition's reason
-- says so, whatever the phase) starts again on a new value of the
-- taskmaster.dev/resume annotation: the request time, as run-now's.
-- (Argo CD runs each script alone, with no module to share: the same few lines
-- are in discovery.lua and resume/action.lua.)
local function stopped_after_failures(status)
  if status == nil or status.conditions == nil then
    return false
  end
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" and c.reason == "StoppedAfterFailures" then
      return true
    end
  end
  return false
end

obj.spec.suspend = false
if stopped_after_failures(obj.status) then
  if obj.metadata.annotations == nil then
    obj.metadata.annotations = {}
  end
  obj.metadata.annotations["taskmaster.dev/resume"] = "argocd-" .. os.date("!%Y%m%dT%H%M%SZ")
end
return obj
