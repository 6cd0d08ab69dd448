-- No new runs while spec.suspend is true; a run already started continues.
obj.spec.suspend = true
return obj
