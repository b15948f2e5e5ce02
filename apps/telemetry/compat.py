"""Reads in the shapes of the plant platform's realtime and aggregation services (docs/compatibility.md).

The platform knew one sensor per location, floors as numbers and values as decimal strings; the
hub answers its clients the same way from the same data as its own realtime/ and aggregation/.
"""

from datetime import datetime

import orjson

from .aggregation import BucketShape, aggregate_readings
from .rollups import plant_tz
from .selectors import RenderedMeasurements, device_metrics, realtime_answer


def platform_floor(floor):
    """The platform's floors were numbers: "1" → 1; anything else stays as it is."""
    return int(floor) if floor.isdigit() else floor


def platform_location(location):
    """A location_json in the platform realtime's form."""
    return {
        "factory": location["factory"],
        "building": location["building"],
        "floor": platform_floor(location["floor"]),
        "loc_id": location["loc_id"],
    }


def platform_value(value, places):
    return None if value is None else f"{value:.{places}f}"


def platform_entry(device, document, plant):
    """The platform's realtime entry of a device (RenderedMeasurements): its location and each
    metric's value as a decimal string of the metric's precision, with its threshold status."""
    metrics, newest = device_metrics(device, orjson.loads(document) if document else None)
    entry = {
        "location": platform_location(device.location),
        "metrics": {
            key: {"value": platform_value(item["value"], plant.precisions.get(key, 1)), "status": item["status"]}
            for key, item in metrics.items()
        },
    }
    rendered = orjson.Fragment(orjson.dumps(entry))
    return document, newest, rendered, rendered  # the platform had no offline flag


PLATFORM_RENDERED = RenderedMeasurements(platform_entry)


def platform_realtime(**location_fields):
    """{"capture_dt", "ymd", "hh", "measurements": [{"location", "metrics"}]}: one entry per active
    device at the locations matching `location_fields` (factory, building, floor, loc_id)."""
    return realtime_answer(PLATFORM_RENDERED, **location_fields)


def platform_hours(*, metric, start, end, locations):
    """Hourly max and avg of `metric` in [start, end) at each of `locations` (Location objects, in
    plant order), in the platform aggregation's form: [{"factory", "building", "floor", "loc_id",
    "area", "date": [{"ymd", "hour", "metrics": {"<key>_max", "<key>_avg"}}]}], values as decimal
    strings with two places, days and hours in plant local time; a location without data has no hours."""
    maximum, average = f"{metric.key}_max", f"{metric.key}_avg"

    def local_hour(epoch, tz):
        at = datetime.fromtimestamp(epoch, tz)
        return at.strftime("%Y%m%d"), at.strftime("%H")

    def hour(when, low, high, total, count):
        return {"ymd": when[0], "hour": when[1], "metrics": {maximum: f"{high:.2f}", average: f"{total / count:.2f}"}}

    results = aggregate_readings(
        metric=metric,
        start=start,
        end=end,
        interval="hour",
        tz=plant_tz(),
        locations=locations,
        shape=BucketShape(local_hour, hour),
    )
    hours = {result["location"]["loc_id"]: result["buckets"] for result in results}
    return [
        {
            "factory": location.factory,
            "building": location.building,
            "floor": platform_floor(location.floor),
            "loc_id": location.loc_id,
            "area": location.area,
            "date": hours.get(location.loc_id, []),
        }
        for location in locations
    ]
