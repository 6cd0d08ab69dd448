-- Scheduling resumes with the next scheduled time: times that passed while the
-- task was suspended are not caught up.
obj.spec.suspend = false
return obj
