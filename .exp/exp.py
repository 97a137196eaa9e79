import json, os, sys, subprocess, time
from dataclasses import asdict
CONFIGS = json.loads(sys.argv[1])
out = os.environ.get("OUT", "/tmp/out")
if len(sys.argv) > 2:  # worker
    import torch
    torch.set_num_threads(1)
    from mlalp_core.demo_training import DemoRecipe, train_demo
    cfg = CONFIGS[int(sys.argv[2])]
    tag = cfg.pop("tag")
    r = DemoRecipe(**cfg)
    t = time.time()
    e = train_demo(r, f"/tmp/m_{tag}", progress=False, device="cuda")
    res = {"tag": tag, "cfg": cfg, "held_out": e["held_out"]["micro_f1"], "held_exact": e["held_out"]["exact_match"],
           "gallery": e["gallery"]["exactly_right"], "hist": [(h["epoch"], round(h["loss"],4), round(h.get("val_micro_f1",0),4)) for h in e["history"]], "sec": time.time()-t}
    print(json.dumps(res), flush=True)
    with open(f"/tmp/res_{tag}.json","w") as f: json.dump(res, f)
    sys.exit(0)
procs = [subprocess.Popen([sys.executable, __file__, sys.argv[1], str(i)]) for i in range(len(CONFIGS))]
for p in procs: p.wait()
allres = []
for c in CONFIGS:
    try: allres.append(json.load(open(f"/tmp/res_{c['tag']}.json")))
    except Exception as ex: allres.append({"tag": c["tag"], "error": str(ex)})
json.dump(allres, open(f"{out}/results.json","w"), indent=1)
for r in allres: print(r.get("tag"), r.get("held_out"), r.get("held_exact"), r.get("gallery"), r.get("sec"), r.get("error",""))
