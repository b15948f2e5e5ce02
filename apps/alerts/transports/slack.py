"""Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): {"text": ...}."""

from .webhook import post_json


def send(route, message):
    post_json(route.target, {"text": f"*{message['subject']}*\n{message['text']}"})
