# The tutorial's dummy API: values from redis at redis-service:4321, with the app version.
from flask import Flask, jsonify
from redis import Redis
import os

app = Flask(__name__)
redis = Redis(
    host="redis-service",  # the redis service's name on the stack's network
    port=4321,
    decode_responses=True,
    socket_timeout=2,
    socket_connect_timeout=2,
)


@app.route("/")
def describe_redis():
    app_version = os.getenv("VERSION")
    try:
        first_name = redis.get("first-name")
        last_name = redis.get("last-name")
        environment = redis.get("environment")
    except Exception:
        first_name = last_name = environment = "ERROR"
    return jsonify({
        "app-version": app_version,
        "first-name": first_name,
        "last-name": last_name,
        "environment": environment,
    })
