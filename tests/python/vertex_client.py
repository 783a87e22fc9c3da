"""An unchanged Vertex AI client, as a user's script would be: credentials come
from Application Default Credentials (google.auth.default), whatever they are.

usage: vertex_client.py API_ENDPOINT PROJECT [list|predict|both]

Prints one JSON line: {"credentials": <class>, "models": N, "predictions": [...]}.
"""
import json
import sys

import google.auth
from google.cloud import aiplatform_v1


def main():
    endpoint, project = sys.argv[1], sys.argv[2]
    what = sys.argv[3] if len(sys.argv) > 3 else "both"
    creds, _ = google.auth.default()
    out = {"credentials": type(creds).__module__ + "." + type(creds).__name__}
    opts = {"api_endpoint": endpoint}
    parent = f"projects/{project}/locations/us-central1"
    if what in ("list", "both"):
        models = aiplatform_v1.ModelServiceClient(transport="rest", client_options=opts)
        out["models"] = len(list(models.list_models(parent=parent)))
    if what in ("predict", "both"):
        pred = aiplatform_v1.PredictionServiceClient(transport="rest", client_options=opts)
        r = pred.predict(endpoint=f"{parent}/endpoints/123", instances=[{"x": 1}])
        out["predictions"] = json.loads(type(r).to_json(r))["predictions"]
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
